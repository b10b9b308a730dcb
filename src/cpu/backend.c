/*
 * backend.c - the CPU backend: fp32 weights, K/V cache and the forward pass.
 *
 * The reference implementation every other backend is tested against. The
 * cache is allocated once, (n_layer, max_len, C) for K and for V, and each
 * pass writes its new positions in place. A pass of T tokens (prefill: the
 * whole prompt; decode: T = 1) runs every block over all T positions at once,
 * then the final layer norm and the LM head only for the positions whose
 * logits the caller asked for.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/kernels.h"
#include "internal.h"

typedef struct {
    float *k_cache, *v_cache; /* (L, max_len, C) */
    /* Activations for up to `cap` tokens, grown on demand. */
    int32_t cap;
    float *x;      /* (cap, C) residual stream */
    float *h;      /* (cap, C) layer-norm output, then attention output */
    float *qkv;    /* (cap, 3C) */
    float *tmp;    /* (cap, C) */
    float *fc;     /* (cap, F) */
    float *scores; /* (n_threads, max_len) */
} cpu_session;

static gptc_status cpu_model_init(gptc_model *m, gptc_dtype dtype) {
    (void)m;
    (void)dtype; /* the CPU computes in fp32 whatever the checkpoint holds */
    return GPTC_OK;
}

static void cpu_model_free(gptc_model *m) { (void)m; }

static void cpu_session_free(gptc_session *s) {
    cpu_session *c = s->impl;
    if (!c) return;
    free(c->k_cache);
    free(c->v_cache);
    free(c->x);
    free(c->h);
    free(c->qkv);
    free(c->tmp);
    free(c->fc);
    free(c->scores);
    free(c);
    s->impl = NULL;
}

static gptc_status cpu_session_init(gptc_session *s) {
    const gptc_model *m = s->model;
    const gptc_config *cfg = &m->cfg;
    cpu_session *c = calloc(1, sizeof *c);
    if (!c) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    s->impl = c;
    size_t kv = (size_t)cfg->n_layer * s->max_len * cfg->n_embd;
    c->k_cache = malloc(kv * sizeof(float));
    c->v_cache = malloc(kv * sizeof(float));
    c->scores = malloc((size_t)m->n_threads * s->max_len * sizeof(float));
    if (!c->k_cache || !c->v_cache || !c->scores) {
        cpu_session_free(s);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory allocating a %zu MB K/V cache",
                         2 * kv * sizeof(float) >> 20);
    }
    return GPTC_OK;
}

static gptc_status reserve(cpu_session *s, const gptc_config *c, int32_t T) {
    if (T <= s->cap) return GPTC_OK;
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

static gptc_status cpu_eval(gptc_session *sess, const int32_t *ids, int T, int n_logits,
                            float *logits) {
    const gptc_model *m = sess->model;
    const gptc_config *c = &m->cfg;
    cpu_session *s = sess->impl;
    int C = c->n_embd, F = c->n_inner, NH = c->n_head, pos0 = sess->len, max_len = sess->max_len;
    int nt = m->n_threads;
    gptc_status st = reserve(s, c, T);
    if (st != GPTC_OK) return st;

    for (int t = 0; t < T; t++) {
        const float *te = m->wte + (size_t)ids[t] * C, *pe = m->wpe + (size_t)(pos0 + t) * C;
        float *x = s->x + (size_t)t * C;
        for (int i = 0; i < C; i++) x[i] = te[i] + pe[i];
    }
    size_t TC = (size_t)T * C;
    for (int l = 0; l < c->n_layer; l++) {
        const gptc_layer *y = &m->layers[l];
        float *kc = s->k_cache + (size_t)l * max_len * C;
        float *vc = s->v_cache + (size_t)l * max_len * C;

        cpu_layernorm(s->h, s->x, y->ln1_w, y->ln1_b, T, C, c->layer_norm_epsilon);
        cpu_matmul(s->qkv, s->h, y->attn_w, y->attn_b, T, C, 3 * C, nt);
        for (int t = 0; t < T; t++) {
            const float *row = s->qkv + (size_t)t * 3 * C;
            memcpy(kc + (size_t)(pos0 + t) * C, row + C, C * sizeof(float));
            memcpy(vc + (size_t)(pos0 + t) * C, row + 2 * C, C * sizeof(float));
        }
        cpu_attention(s->h, s->qkv, 3 * (size_t)C, kc, vc, pos0, T, C, NH,
                      gptc_attn_scale(c, l), s->scores, nt);
        cpu_matmul(s->tmp, s->h, y->proj_w, y->proj_b, T, C, C, nt);
        cpu_add(s->x, s->tmp, TC);

        cpu_layernorm(s->h, s->x, y->ln2_w, y->ln2_b, T, C, c->layer_norm_epsilon);
        cpu_matmul(s->fc, s->h, y->fc_w, y->fc_b, T, C, F, nt);
        cpu_activation(s->fc, (size_t)T * F, m->act, nt);
        cpu_matmul(s->tmp, s->fc, y->mproj_w, y->mproj_b, T, F, C, nt);
        cpu_add(s->x, s->tmp, TC);
    }
    if (n_logits) {
        int first = T - n_logits;
        cpu_layernorm(s->h, s->x + (size_t)first * C, m->lnf_w, m->lnf_b, n_logits, C,
                      c->layer_norm_epsilon);
        cpu_matmul(logits, s->h, m->lm_head, NULL, n_logits, C, c->n_vocab, nt);
    }
    return GPTC_OK;
}

static gptc_status cpu_session_copy(gptc_session *dst, const gptc_session *src) {
    cpu_session *d = dst->impl;
    const cpu_session *s = src->impl;
    size_t C = (size_t)dst->model->cfg.n_embd, n = (size_t)src->len * C;
    for (int l = 0; l < dst->model->cfg.n_layer; l++) {
        memcpy(d->k_cache + (size_t)l * dst->max_len * C, s->k_cache + (size_t)l * src->max_len * C, n * sizeof(float));
        memcpy(d->v_cache + (size_t)l * dst->max_len * C, s->v_cache + (size_t)l * src->max_len * C, n * sizeof(float));
    }
    return GPTC_OK;
}

const gptc_backend_ops gptc_cpu_backend = {
    .name = "cpu",
    .model_init = cpu_model_init,
    .model_free = cpu_model_free,
    .session_init = cpu_session_init,
    .session_free = cpu_session_free,
    .eval = cpu_eval,
    .eval_greedy = NULL,
    .session_copy = cpu_session_copy,
};
