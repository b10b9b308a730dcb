/*
 * session.c - one sequence: its length and its backend's K/V cache.
 *
 * Checks every argument, then hands the work to the model's backend
 * (backend.h), which writes the cache in place.
 */
#include <stdlib.h>

#include "backend.h"
#include "internal.h"

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
    gptc_status st = m->backend->session_init(s);
    if (st != GPTC_OK) {
        free(s);
        return st;
    }
    *out = s;
    return GPTC_OK;
}

void gptc_session_free(gptc_session *s) {
    if (!s) return;
    s->model->backend->session_free(s);
    free(s);
}

void gptc_session_reset(gptc_session *s) { s->len = 0; }
int32_t gptc_session_len(const gptc_session *s) { return s->len; }

static gptc_status check_tokens(const gptc_session *s, const int32_t *ids, size_t n) {
    const gptc_config *c = &s->model->cfg;
    if (n == 0) return gptc_fail(GPTC_ERR_ARG, "eval: no tokens");
    if (!ids) return gptc_fail(GPTC_ERR_ARG, "eval: ids is NULL");
    if (n > (size_t)(s->max_len - s->len))
        return gptc_fail(GPTC_ERR_RANGE, "eval: %zu tokens at position %d exceed the session length %d",
                         n, s->len, s->max_len);
    for (size_t t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->n_vocab)
            return gptc_fail(GPTC_ERR_RANGE, "token id %d is out of range [0, %d)", ids[t], c->n_vocab);
    return GPTC_OK;
}

gptc_status gptc_session_eval(gptc_session *s, const int32_t *ids, size_t n, size_t n_logits,
                              float *logits) {
    gptc_status st = check_tokens(s, ids, n);
    if (st != GPTC_OK) return st;
    if (n_logits > n) return gptc_fail(GPTC_ERR_ARG, "eval: n_logits %zu > n %zu", n_logits, n);
    if (n_logits && !logits) return gptc_fail(GPTC_ERR_ARG, "eval: logits buffer is NULL");
    st = s->model->backend->eval(s, ids, (int)n, (int)n_logits, logits);
    if (st == GPTC_OK) s->len += (int32_t)n;
    return st;
}

int gptc_session_has_greedy(const gptc_session *s) {
    return s->model->backend->eval_greedy != NULL;
}

gptc_status gptc_session_eval_greedy(gptc_session *s, int32_t id, int32_t *next) {
    gptc_status st = check_tokens(s, &id, 1);
    if (st != GPTC_OK) return st;
    if (!s->model->backend->eval_greedy)
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "eval_greedy: the %s backend has none",
                         s->model->backend->name);
    st = s->model->backend->eval_greedy(s, id, next);
    if (st == GPTC_OK) s->len += 1;
    return st;
}

int gptc_session_can_sample(const gptc_session *s) {
    return s->model->backend->sample_init != NULL && s->model->backend->eval_sample != NULL;
}

gptc_status gptc_session_sample_init(gptc_session *s, const gptc_generate_params *p,
                                     const int32_t *hist, size_t n) {
    if (!gptc_session_can_sample(s))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "sampling: the %s backend has no sampler",
                         s->model->backend->name);
    if (n > (size_t)s->len)
        return gptc_fail(GPTC_ERR_ARG, "sampling: history of %zu tokens, the session holds %d", n,
                         s->len);
    if (n && !hist) return gptc_fail(GPTC_ERR_ARG, "sampling: history is NULL");
    gptc_status st = GPTC_OK;
    for (size_t i = 0; st == GPTC_OK && i < n; i++)
        if (hist[i] < 0 || hist[i] >= s->model->cfg.n_vocab)
            st = gptc_fail(GPTC_ERR_RANGE, "token id %d is out of range [0, %d)", hist[i],
                           s->model->cfg.n_vocab);
    if (st != GPTC_OK) return st;
    return s->model->backend->sample_init(s, p, hist, (int)n);
}

gptc_status gptc_session_eval_sample(gptc_session *s, const int32_t *ids, size_t n, int32_t *next) {
    gptc_status st = check_tokens(s, ids, n);
    if (st != GPTC_OK) return st;
    if (!gptc_session_can_sample(s))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "sampling: the %s backend has no sampler",
                         s->model->backend->name);
    st = s->model->backend->eval_sample(s, ids, (int)n, next);
    if (st == GPTC_OK) s->len += (int32_t)n;
    return st;
}

gptc_status gptc_session_copy(gptc_session *dst, const gptc_session *src) {
    if (dst->model != src->model)
        return gptc_fail(GPTC_ERR_ARG, "session copy: the sessions belong to different models");
    if (src->len > dst->max_len)
        return gptc_fail(GPTC_ERR_RANGE, "session copy: %d positions do not fit a session of %d",
                         src->len, dst->max_len);
    if (dst == src) return GPTC_OK;
    gptc_status st = dst->model->backend->session_copy(dst, src);
    if (st == GPTC_OK) dst->len = src->len;
    return st;
}
