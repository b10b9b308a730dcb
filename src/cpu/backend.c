/*
 * backend.c - the CPU backend: fp32 weights, K/V cache and the forward pass.
 *
 * The reference implementation every other backend is tested against. The
 * K/V cache is paged: blocks of positions, (n_layer, n_blocks, block_size, C)
 * for K and for V, allocated once; each pass writes its new positions in
 * place. The batch engine hands blocks to its sequences; a session is a cache
 * of one block as long as the session. A pass of T tokens (a prompt, one new
 * token of each sequence of a batch, or both) runs every block over all T
 * positions at once.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/kernels.h"
#include "internal.h"
#include "sampling.h"

/* Activations for up to `cap` tokens of a pass, grown on demand. */
typedef struct {
    int32_t cap, score_len;
    float *x;      /* (cap, C) residual stream */
    float *h;      /* (cap, C) layer-norm output, then attention output */
    float *qkv;    /* (cap, 3C) */
    float *tmp;    /* (cap, C) */
    float *fc;     /* (cap, F) */
    float *scores; /* (n_threads, score_len) */
    float *last;   /* (cap, C) final layer norm of the rows with logits */
} cpu_scratch;

/* K and V of every layer: (L, n_blocks, block_size, C) each. A session is
 * the case of one block of max_len positions. */
typedef struct {
    float *k, *v;
    int32_t n_blocks, block_size;
    cpu_scratch sc;
} cpu_kv;

static void scratch_free(cpu_scratch *s) {
    free(s->x);
    free(s->h);
    free(s->qkv);
    free(s->tmp);
    free(s->fc);
    free(s->scores);
    free(s->last);
    memset(s, 0, sizeof *s);
}

static gptc_status scratch_reserve(cpu_scratch *s, const gptc_model *m, int32_t T, int32_t len) {
    const gptc_config *c = &m->cfg;
    if (len > s->score_len) {
        float *p = realloc(s->scores, (size_t)m->n_threads * len * sizeof(float));
        if (!p) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for attention over %d positions", len);
        s->scores = p;
        s->score_len = len;
    }
    if (T <= s->cap) return GPTC_OK;
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, n = (size_t)T;
    float **bufs[6] = {&s->x, &s->h, &s->qkv, &s->tmp, &s->fc, &s->last};
    size_t sizes[6] = {n * C, n * C, 3 * n * C, n * C, n * F, n * C};
    for (int i = 0; i < 6; i++) {
        float *p = realloc(*bufs[i], sizes[i] * sizeof(float));
        if (!p) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %d positions", T);
        *bufs[i] = p;
    }
    s->cap = T;
    return GPTC_OK;
}

static void cpu_kv_free(gptc_model *m, void *kv) {
    (void)m;
    cpu_kv *c = kv;
    if (!c) return;
    free(c->k);
    free(c->v);
    scratch_free(&c->sc);
    free(c);
}

static gptc_status cpu_kv_new(gptc_model *m, int32_t n_blocks, int32_t block_size, void **out) {
    const gptc_config *cfg = &m->cfg;
    *out = NULL;
    cpu_kv *c = calloc(1, sizeof *c);
    if (!c) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    size_t n = (size_t)cfg->n_layer * n_blocks * block_size * cfg->n_embd;
    c->k = malloc(n * sizeof(float));
    c->v = malloc(n * sizeof(float));
    c->n_blocks = n_blocks;
    c->block_size = block_size;
    if (!c->k || !c->v) {
        cpu_kv_free(m, c);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory allocating a %zu MB K/V cache",
                         2 * n * sizeof(float) >> 20);
    }
    *out = c;
    return GPTC_OK;
}

static gptc_status cpu_kv_copy(gptc_model *m, void *kv, int32_t dst, int32_t src, int32_t n_pos) {
    cpu_kv *c = kv;
    size_t C = (size_t)m->cfg.n_embd, bs = (size_t)c->block_size;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        size_t base = (size_t)l * c->n_blocks;
        memcpy(c->k + ((base + dst) * bs) * C, c->k + ((base + src) * bs) * C, (size_t)n_pos * C * sizeof(float));
        memcpy(c->v + ((base + dst) * bs) * C, c->v + ((base + src) * bs) * C, (size_t)n_pos * C * sizeof(float));
    }
    return GPTC_OK;
}

/*
 * The forward pass: every block over all T tokens at once (the weights are
 * read once for the whole pass), then the final layer norm and the LM head
 * only for the rows whose logits are wanted.
 */
static gptc_status cpu_kv_eval(gptc_model *m, void *kv_, const gptc_pass *p, float *logits) {
    const gptc_config *c = &m->cfg;
    cpu_kv *kv = kv_;
    cpu_scratch *s = &kv->sc;
    int T = p->n_tokens, C = c->n_embd, F = c->n_inner, NH = c->n_head, nt = m->n_threads;
    int32_t len = 0; /* the longest attention span in the pass */
    for (int t = 0; t < T; t++)
        if (p->pos[t] + 1 > len) len = p->pos[t] + 1;
    gptc_status st = scratch_reserve(s, m, T, len);
    if (st != GPTC_OK) return st;

    for (int t = 0; t < T; t++) {
        const float *te = m->wte + (size_t)p->ids[t] * C, *pe = m->wpe + (size_t)p->pos[t] * C;
        float *x = s->x + (size_t)t * C;
        for (int i = 0; i < C; i++) x[i] = te[i] + pe[i];
    }
    size_t TC = (size_t)T * C, bs = (size_t)kv->block_size;
    cpu_kv_layout lay = {.block_size = kv->block_size, .tables = p->tables, .seq = p->seq, .pos = p->pos};
    for (int l = 0; l < c->n_layer; l++) {
        const gptc_layer *y = &m->layers[l];
        float *kl = kv->k + (size_t)l * kv->n_blocks * bs * C, *vl = kv->v + (size_t)l * kv->n_blocks * bs * C;
        lay.k = kl;
        lay.v = vl;

        cpu_layernorm(s->h, s->x, y->ln1_w, y->ln1_b, T, C, c->layer_norm_epsilon);
        cpu_matmul(s->qkv, s->h, y->attn_w, y->attn_b, T, C, 3 * C, nt);
        for (int t = 0; t < T; t++) {
            const float *row = s->qkv + (size_t)t * 3 * C;
            size_t at = ((size_t)p->tables[p->seq[t]][p->pos[t] / bs] * bs + (size_t)p->pos[t] % bs) * C;
            memcpy(kl + at, row + C, C * sizeof(float));
            memcpy(vl + at, row + 2 * C, C * sizeof(float));
        }
        cpu_attention(s->h, s->qkv, 3 * (size_t)C, &lay, T, C, NH, gptc_attn_scale(c, l), s->scores,
                      s->score_len, nt);
        cpu_matmul(s->tmp, s->h, y->proj_w, y->proj_b, T, C, C, nt);
        cpu_add(s->x, s->tmp, TC);

        cpu_layernorm(s->h, s->x, y->ln2_w, y->ln2_b, T, C, c->layer_norm_epsilon);
        cpu_matmul(s->fc, s->h, y->fc_w, y->fc_b, T, C, F, nt);
        cpu_activation(s->fc, (size_t)T * F, m->act, nt);
        cpu_matmul(s->tmp, s->fc, y->mproj_w, y->mproj_b, T, F, C, nt);
        cpu_add(s->x, s->tmp, TC);
    }
    if (p->n_logits) {
        for (int r = 0; r < p->n_logits; r++)
            cpu_layernorm(s->last + (size_t)r * C, s->x + (size_t)p->logit_rows[r] * C, m->lnf_w, m->lnf_b,
                          1, C, c->layer_norm_epsilon);
        cpu_matmul(logits, s->last, m->lm_head, NULL, p->n_logits, C, c->n_vocab, nt);
        /* The logits are here already: argmax_only saves the caller nothing
         * on the CPU, but keeps the contract every backend meets. */
        if (p->argmax_only)
            for (int r = 0; r < p->n_logits; r++)
                if (p->argmax_only[r]) p->next[r] = sample_argmax(logits + (size_t)r * c->n_vocab, c->n_vocab);
    }
    return GPTC_OK;
}

/* ---- sessions: one sequence in a cache of one block ---- */

typedef struct {
    cpu_kv *kv;
    int32_t *pass_buf; /* pos, seq and logit rows for up to `cap` tokens */
    int32_t cap;
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
    cpu_kv_free(s->model, c->kv);
    free(c->pass_buf);
    free(c);
    s->impl = NULL;
}

static gptc_status cpu_session_init(gptc_session *s) {
    cpu_session *c = calloc(1, sizeof *c);
    if (!c) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    s->impl = c;
    void *kv = NULL;
    gptc_status st = cpu_kv_new(s->model, 1, s->max_len, &kv);
    if (st != GPTC_OK) {
        cpu_session_free(s);
        return st;
    }
    c->kv = kv;
    return GPTC_OK;
}

static gptc_status cpu_eval(gptc_session *sess, const int32_t *ids, int T, int n_logits,
                            float *logits) {
    cpu_session *c = sess->impl;
    if (T > c->cap) {
        int32_t *b = realloc(c->pass_buf, (size_t)T * 3 * sizeof *b);
        if (!b) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %d positions", T);
        c->pass_buf = b;
        c->cap = T;
    }
    int32_t *pos = c->pass_buf, *seq = pos + T, *rows = seq + T;
    static const int32_t block0[1] = {0};
    const int32_t *tables[1] = {block0};
    for (int t = 0; t < T; t++) pos[t] = sess->len + t, seq[t] = 0;
    for (int r = 0; r < n_logits; r++) rows[r] = T - n_logits + r;
    gptc_pass p = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .tables = tables,
                   .n_logits = n_logits, .logit_rows = rows};
    return cpu_kv_eval(sess->model, c->kv, &p, logits);
}

static gptc_status cpu_session_copy(gptc_session *dst, const gptc_session *src) {
    cpu_kv *d = ((cpu_session *)dst->impl)->kv;
    const cpu_kv *s = ((const cpu_session *)src->impl)->kv;
    size_t C = (size_t)dst->model->cfg.n_embd, n = (size_t)src->len * C;
    for (int l = 0; l < dst->model->cfg.n_layer; l++) {
        memcpy(d->k + (size_t)l * d->block_size * C, s->k + (size_t)l * s->block_size * C, n * sizeof(float));
        memcpy(d->v + (size_t)l * d->block_size * C, s->v + (size_t)l * s->block_size * C, n * sizeof(float));
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
    .kv_new = cpu_kv_new,
    .kv_free = cpu_kv_free,
    .kv_copy = cpu_kv_copy,
    .kv_eval = cpu_kv_eval,
};
