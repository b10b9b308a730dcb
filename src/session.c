/*
 * session.c - one sequence: its K/V cache and the forward pass over it.
 *
 * The cache is allocated once, (n_layer, max_len, C) for K and for V, and each
 * pass writes its new positions in place. A pass of T tokens (prefill: the
 * whole prompt; decode: T = 1) runs every block over all T positions at once,
 * then the final layer norm and the LM head only for the positions whose
 * logits the caller asked for.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "internal.h"
#include "model.h"

struct gptc_session {
    gptc_model *model;
    int32_t max_len, len;
    float *k_cache, *v_cache; /* (L, max_len, C) */
    /* Activations for up to `cap` tokens, grown on demand. */
    int32_t cap;
    float *x;      /* (cap, C) residual stream */
    float *h;      /* (cap, C) layer-norm output, then attention output */
    float *qkv;    /* (cap, 3C) */
    float *tmp;    /* (cap, C) */
    float *fc;     /* (cap, F) */
    float *scores; /* (n_threads, max_len) */
};

gptc_status gptc_session_new(gptc_model *m, int32_t max_len, gptc_session **out) {
    *out = NULL;
    const gptc_config *c = &m->cfg;
    if (max_len <= 0 || max_len > c->n_ctx)
        return gptc_fail(GPTC_ERR_RANGE, "session length %d is outside [1, n_positions = %d]",
                         max_len, c->n_ctx);
    gptc_session *s = calloc(1, sizeof *s);
    if (!s) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    s->model = m;
    s->max_len = max_len;
    size_t kv = (size_t)c->n_layer * max_len * c->n_embd;
    s->k_cache = malloc(kv * sizeof(float));
    s->v_cache = malloc(kv * sizeof(float));
    s->scores = malloc((size_t)m->n_threads * max_len * sizeof(float));
    if (!s->k_cache || !s->v_cache || !s->scores) {
        gptc_session_free(s);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory allocating a %zu MB K/V cache",
                         2 * kv * sizeof(float) >> 20);
    }
    *out = s;
    return GPTC_OK;
}

void gptc_session_free(gptc_session *s) {
    if (!s) return;
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->h);
    free(s->qkv);
    free(s->tmp);
    free(s->fc);
    free(s->scores);
    free(s);
}

void gptc_session_reset(gptc_session *s) { s->len = 0; }
int32_t gptc_session_len(const gptc_session *s) { return s->len; }

static gptc_status reserve(gptc_session *s, int32_t T) {
    if (T <= s->cap) return GPTC_OK;
    const gptc_config *c = &s->model->cfg;
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner;
    float *p[5] = {realloc(s->x, T * C * sizeof(float)), NULL, NULL, NULL, NULL};
    if (p[0]) s->x = p[0];
    if ((p[1] = realloc(s->h, T * C * sizeof(float)))) s->h = p[1];
    if ((p[2] = realloc(s->qkv, 3 * T * C * sizeof(float)))) s->qkv = p[2];
    if ((p[3] = realloc(s->tmp, T * C * sizeof(float)))) s->tmp = p[3];
    if ((p[4] = realloc(s->fc, T * F * sizeof(float)))) s->fc = p[4];
    for (int i = 0; i < 5; i++)
        if (!p[i]) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %d positions", T);
    s->cap = T;
    return GPTC_OK;
}

gptc_status gptc_session_eval(gptc_session *s, const int32_t *ids, size_t n, size_t n_logits,
                              float *logits) {
    gptc_model *m = s->model;
    const gptc_config *c = &m->cfg;
    if (n == 0) return gptc_fail(GPTC_ERR_ARG, "eval: no tokens");
    if (n_logits > n) return gptc_fail(GPTC_ERR_ARG, "eval: n_logits %zu > n %zu", n_logits, n);
    if (n_logits && !logits) return gptc_fail(GPTC_ERR_ARG, "eval: logits buffer is NULL");
    if (n > (size_t)(s->max_len - s->len))
        return gptc_fail(GPTC_ERR_RANGE, "eval: %zu tokens at position %d exceed the session length %d",
                         n, s->len, s->max_len);
    for (size_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->n_vocab)
            return gptc_fail(GPTC_ERR_RANGE, "token id %d is out of range [0, %d)", ids[t], c->n_vocab);
    int T = (int)n, C = c->n_embd, F = c->n_inner, NH = c->n_head, pos0 = s->len;
    int nt = m->n_threads;
    gptc_status st = reserve(s, T);
    if (st != GPTC_OK) return st;

    for (int t = 0; t < T; t++) {
        const float *te = m->wte + (size_t)ids[t] * C, *pe = m->wpe + (size_t)(pos0 + t) * C;
        float *x = s->x + (size_t)t * C;
        for (int i = 0; i < C; i++) x[i] = te[i] + pe[i];
    }
    size_t TC = (size_t)T * C;
    for (int l = 0; l < c->n_layer; l++) {
        const gptc_layer *y = &m->layers[l];
        float *kc = s->k_cache + (size_t)l * s->max_len * C;
        float *vc = s->v_cache + (size_t)l * s->max_len * C;

        cpu_layernorm(s->h, s->x, y->ln1_w, y->ln1_b, T, C, c->layer_norm_epsilon);
        cpu_matmul(s->qkv, s->h, y->attn_w, y->attn_b, T, C, 3 * C, nt);
        for (int t = 0; t < T; t++) {
            const float *row = s->qkv + (size_t)t * 3 * C;
            memcpy(kc + (size_t)(pos0 + t) * C, row + C, C * sizeof(float));
            memcpy(vc + (size_t)(pos0 + t) * C, row + 2 * C, C * sizeof(float));
        }
        float scale = 1.0f;
        if (c->scale_attn_weights) scale /= sqrtf((float)(C / NH));
        if (c->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
        cpu_attention(s->h, s->qkv, 3 * (size_t)C, kc, vc, pos0, T, C, NH, scale, s->scores, nt);
        cpu_matmul(s->tmp, s->h, y->proj_w, y->proj_b, T, C, C, nt);
        cpu_add(s->x, s->tmp, TC);

        cpu_layernorm(s->h, s->x, y->ln2_w, y->ln2_b, T, C, c->layer_norm_epsilon);
        cpu_matmul(s->fc, s->h, y->fc_w, y->fc_b, T, C, F, nt);
        cpu_activation(s->fc, (size_t)T * F, m->act, nt);
        cpu_matmul(s->tmp, s->fc, y->mproj_w, y->mproj_b, T, F, C, nt);
        cpu_add(s->x, s->tmp, TC);
    }
    s->len += T;
    if (n_logits) {
        int first = T - (int)n_logits;
        cpu_layernorm(s->h, s->x + (size_t)first * C, m->lnf_w, m->lnf_b, (int)n_logits, C,
                      c->layer_norm_epsilon);
        cpu_matmul(logits, s->h, m->lm_head, NULL, (int)n_logits, C, c->n_vocab, nt);
    }
    return GPTC_OK;
}
