/*
 * batch.c - batched generation with continuous batching (gptc_batch_*).
 *
 * Each step makes one forward pass over every running request: the whole
 * prompt of those that start, one token of the others, so the weights are
 * read once per step for the batch. Requests keep their own gen_seq
 * (processors, sampler, stopping rules) and their K/V positions in blocks of
 * the backend's paged cache (kvblocks.c): no padding, no copies, and a block
 * returns to the pool the moment its request ends.
 *
 * Memory: a request reserves blocks for prompt + max_new_tokens positions
 * when it starts (its worst case), and takes them as it fills them, so a
 * running request never waits for memory and nothing has to be evicted;
 * requests that do not fit wait in order of arrival.
 *
 * A request whose next token is the argmax of its logits (greedy, no
 * processor) gets it from the backend (gptc_pass.argmax_only), one that
 * samples or has processors from a sampler of its own on the backend
 * (kv_sampler_new; CUDA): either way its logits stay on the device. The
 * others' (presence/frequency penalties, log-probabilities asked for, or a
 * backend without these) come to the host for gen_seq_pick.
 *
 * A backend without a paged cache runs each request in a session of its
 * own, one after another within the step: the same results and the same
 * API, without the shared weight reads.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "generate.h"
#include "internal.h"
#include "kvblocks.h"
#include "model.h"
#include "sampling.h"
#include "sequence.h"

#define BLOCK_SIZE 16

typedef struct request {
    uint64_t id;
    gen_seq g;
    int32_t *table; /* its blocks, in position order */
    int32_t n_table;
    int32_t reserve; /* blocks reserved: prompt + max_new positions */
    int32_t n_kv;    /* positions in the cache */
    int started;
    void *sampler;      /* the backend's sampler for this request, or NULL */
    gptc_session *sess; /* backends without a paged cache */
    int on_device;      /* sess samples on the device */
    int32_t logprobs;   /* -1, or the n_top of gptc_batch_logprobs */
    struct request *next; /* queue order */
} request;

struct gptc_batch {
    gptc_model *m;
    const gptc_tokenizer *tok;
    gptc_batch_params p;
    int paged;
    void *kv;
    kv_blocks blocks;
    int64_t n_blocks, reserved;
    request **run;
    size_t n_run;
    request *head, *tail; /* waiting */
    size_t n_wait;
    request **empty; /* max_new_tokens 0: finished before they start */
    size_t n_empty, cap_empty;
    uint64_t next_id;
    /* pass buffers */
    int32_t *ids, *pos, *seq, *rows, *next;
    uint8_t *argmax_only;
    void **samplers;
    int device_pick; /* rows whose pick is the argmax get it from the backend */
    size_t cap_tok;
    const int32_t **tables;
    int32_t *n_table;
    float *logits;
    /* this step's log-probabilities, per running row: [max_batch][GPTC_MAX_TOP_LOGPROBS] */
    int32_t *lp_ids;
    float *lp_vals;
    float *lp_raw; /* one row of raw logits */
    gptc_batch_event *ev;
    size_t cap_ev;
};

gptc_batch_params gptc_batch_default_params(void) {
    return (gptc_batch_params){.kv_memory = 0, .max_batch = 32, .max_prefill_tokens = 2048};
}

/* Bytes one position of one sequence takes in the cache (K and V, all layers). */
static uint64_t position_bytes(const gptc_model *m) {
    uint64_t elem = m->backend == &gptc_cpu_backend ? 4 : (uint64_t)m->weight_bytes;
    return 2 * (uint64_t)m->cfg.n_layer * (uint64_t)m->cfg.n_embd * elem;
}

static void request_free(gptc_batch *b, request *r) {
    if (!r) return;
    for (int32_t i = 0; i < r->n_table; i++) kvb_release(&b->blocks, r->table[i]);
    free(r->table);
    if (r->sampler) b->m->backend->kv_sampler_free(b->m, b->kv, r->sampler);
    gptc_session_free(r->sess);
    gen_seq_free(&r->g);
    free(r);
}

void gptc_batch_free(gptc_batch *b) {
    if (!b) return;
    for (size_t i = 0; i < b->n_run; i++) request_free(b, b->run[i]);
    for (request *r = b->head; r;) {
        request *n = r->next;
        request_free(b, r);
        r = n;
    }
    for (size_t i = 0; i < b->n_empty; i++) request_free(b, b->empty[i]);
    free(b->empty);
    if (b->kv) b->m->backend->kv_free(b->m, b->kv);
    kvb_destroy(&b->blocks);
    free(b->run);
    free(b->ids);
    free(b->next);
    free(b->argmax_only);
    free(b->samplers);
    free(b->tables);
    free(b->n_table);
    free(b->logits);
    free(b->lp_ids);
    free(b->lp_vals);
    free(b->lp_raw);
    free(b->ev);
    free(b);
}

gptc_status gptc_batch_new(gptc_model *m, const gptc_tokenizer *tok, const gptc_batch_params *params,
                           gptc_batch **out) {
    if (!out) return gptc_fail(GPTC_ERR_ARG, "gptc_batch_new: out is NULL");
    *out = NULL;
    if (!m) return gptc_fail(GPTC_ERR_ARG, "gptc_batch_new: model is NULL");
    gptc_batch_params p = params ? *params : gptc_batch_default_params();
    if (p.max_batch == 0) p.max_batch = 32;
    if (p.max_prefill_tokens == 0) p.max_prefill_tokens = 2048;
    if (p.max_batch < 1 || p.max_batch > 65536)
        return gptc_fail(GPTC_ERR_ARG, "max_batch: %d is outside [1, 65536]", p.max_batch);
    if (p.fast_decode != 0 && p.fast_decode != 1)
        return gptc_fail(GPTC_ERR_ARG, "fast_decode: %d is not 0 or 1", p.fast_decode);
    if (p.max_prefill_tokens < 1)
        return gptc_fail(GPTC_ERR_ARG, "max_prefill_tokens: %d is not positive", p.max_prefill_tokens);
    const gptc_config *c = &m->cfg;
    uint64_t pos_bytes = position_bytes(m), block_bytes = pos_bytes * BLOCK_SIZE;
    int64_t blocks_per_seq = (c->n_ctx + BLOCK_SIZE - 1) / BLOCK_SIZE;
    int64_t n_blocks = p.kv_memory ? (int64_t)(p.kv_memory / block_bytes) : blocks_per_seq * p.max_batch;
    if (n_blocks < 1)
        return gptc_fail(GPTC_ERR_RANGE, "kv_memory: %llu bytes is less than one block of %d positions (%llu bytes)",
                         (unsigned long long)p.kv_memory, BLOCK_SIZE, (unsigned long long)block_bytes);
    if (n_blocks > INT32_MAX / 2) n_blocks = INT32_MAX / 2;
    gptc_batch *b = calloc(1, sizeof *b);
    if (!b) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    b->m = m;
    b->tok = tok;
    b->p = p;
    b->n_blocks = n_blocks;
    b->next_id = 1;
    b->paged = m->backend->kv_eval != NULL;
    /* GPTC_HOST_SAMPLING=1: every pick on the host, from logits copied
     * there (the "host logits" comparison of the benchmarks). */
    b->device_pick = !getenv("GPTC_HOST_SAMPLING");
    b->run = calloc((size_t)p.max_batch, sizeof *b->run);
    b->tables = calloc((size_t)p.max_batch, sizeof *b->tables);
    b->n_table = calloc((size_t)p.max_batch, sizeof *b->n_table);
    b->next = calloc((size_t)p.max_batch, sizeof *b->next);
    b->argmax_only = calloc((size_t)p.max_batch, 1);
    b->samplers = calloc((size_t)p.max_batch, sizeof *b->samplers);
    gptc_status st = b->run && b->tables && b->n_table && b->next && b->argmax_only && b->samplers
                         ? GPTC_OK
                         : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    if (st == GPTC_OK && b->paged) {
        st = kvb_init(&b->blocks, (int32_t)n_blocks, BLOCK_SIZE);
        if (st == GPTC_OK) st = m->backend->kv_new(m, (int32_t)n_blocks, BLOCK_SIZE, &b->kv);
    }
    if (st != GPTC_OK) {
        gptc_batch_free(b);
        return st;
    }
    *out = b;
    return GPTC_OK;
}

static int32_t blocks_for(int64_t positions) { return (int32_t)((positions + BLOCK_SIZE - 1) / BLOCK_SIZE); }

gptc_status gptc_batch_add(gptc_batch *b, const int32_t *prompt, size_t n_prompt,
                           const gptc_generate_params *params, uint64_t *id) {
    if (!b) return gptc_fail(GPTC_ERR_ARG, "gptc_batch_add: batch is NULL");
    if (id) *id = 0;
    if (params && params->num_beams > 1)
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "num_beams: beam search is not batched (num_beams must be 1)");
    int64_t max_new = 0;
    gptc_status st = gptc_generate_prepare(b->m, b->tok, params, &prompt, &n_prompt, &max_new);
    if (st != GPTC_OK) return st;
    int64_t need = blocks_for((int64_t)n_prompt + max_new);
    if (need > b->n_blocks)
        return gptc_fail(GPTC_ERR_RANGE,
                         "kv_memory: the K/V cache holds %lld positions; this request needs %lld "
                         "(prompt %zu + max_new_tokens %lld, in blocks of %d)",
                         (long long)b->n_blocks * BLOCK_SIZE, (long long)need * BLOCK_SIZE, n_prompt,
                         (long long)max_new, BLOCK_SIZE);
    request *r = calloc(1, sizeof *r);
    if (!r) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    if (max_new == 0) {
        /* Nothing to generate: finished at the next step, as gptc_generate
         * returns at once. */
        if (b->n_empty == b->cap_empty) {
            size_t cap = b->cap_empty ? 2 * b->cap_empty : 8;
            request **e = realloc(b->empty, cap * sizeof *e);
            if (!e) {
                free(r);
                return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            }
            b->empty = e;
            b->cap_empty = cap;
        }
        r->id = b->next_id++;
        r->logprobs = -1;
        b->empty[b->n_empty++] = r;
        if (id) *id = r->id;
        return GPTC_OK;
    }
    if ((st = gen_seq_init(&r->g, b->m, b->tok, params, prompt, n_prompt, max_new, 1)) != GPTC_OK) {
        free(r);
        return st;
    }
    r->reserve = (int32_t)need;
    r->logprobs = -1;
    r->table = malloc((size_t)need * sizeof *r->table);
    if (!r->table) {
        request_free(b, r);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    r->id = b->next_id++;
    if (b->tail) b->tail->next = r;
    else b->head = r;
    b->tail = r;
    b->n_wait++;
    if (id) *id = r->id;
    return GPTC_OK;
}

gptc_status gptc_batch_logprobs(gptc_batch *b, uint64_t id, int32_t n_top) {
    if (!b) return gptc_fail(GPTC_ERR_ARG, "gptc_batch_logprobs: batch is NULL");
    if (n_top < 0 || n_top > GPTC_MAX_TOP_LOGPROBS)
        return gptc_fail(GPTC_ERR_ARG, "logprobs: %d is outside [0, %d]", n_top, GPTC_MAX_TOP_LOGPROBS);
    request *r = NULL;
    for (request *w = b->head; w && !r; w = w->next)
        if (w->id == id) r = w;
    for (size_t i = 0; i < b->n_empty && !r; i++)
        if (b->empty[i]->id == id) r = b->empty[i];
    if (!r)
        return gptc_fail(GPTC_ERR_ARG, "gptc_batch_logprobs: no waiting request %llu (it started, ended or was never added)",
                         (unsigned long long)id);
    if (!b->lp_ids) {
        size_t n = (size_t)b->p.max_batch * GPTC_MAX_TOP_LOGPROBS;
        b->lp_ids = malloc(n * sizeof *b->lp_ids);
        b->lp_vals = malloc(n * sizeof *b->lp_vals);
        b->lp_raw = malloc((size_t)b->m->cfg.n_vocab * sizeof *b->lp_raw);
        if (!b->lp_ids || !b->lp_vals || !b->lp_raw) {
            free(b->lp_ids);
            free(b->lp_vals);
            free(b->lp_raw);
            b->lp_ids = NULL;
            b->lp_vals = NULL;
            b->lp_raw = NULL;
            return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        }
    }
    r->logprobs = n_top;
    return GPTC_OK;
}

int32_t gptc_logprobs(const float *logits, int32_t n_vocab, int32_t id, int32_t n_top, float *logprob,
                      int32_t *top_ids, float *top_logprobs) {
    if (logprob) *logprob = NAN;
    if (!logits || n_vocab < 1 || id < 0 || id >= n_vocab || n_top < 0 || !logprob ||
        (n_top && (!top_ids || !top_logprobs)))
        return 0;
    return sample_logprobs(logits, n_vocab, id, n_top, logprob, top_ids, top_logprobs);
}

static void finish_running(gptc_batch *b, size_t i) {
    request *r = b->run[i];
    b->reserved -= r->reserve;
    b->run[i] = b->run[--b->n_run];
    request_free(b, r);
}

gptc_status gptc_batch_cancel(gptc_batch *b, uint64_t id) {
    if (!b) return gptc_fail(GPTC_ERR_ARG, "gptc_batch_cancel: batch is NULL");
    for (size_t i = 0; i < b->n_run; i++)
        if (b->run[i]->id == id) {
            finish_running(b, i);
            return GPTC_OK;
        }
    for (request **pp = &b->head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
        if ((*pp)->id == id) {
            request *r = *pp;
            *pp = r->next;
            if (b->tail == r) b->tail = prev;
            b->n_wait--;
            request_free(b, r);
            return GPTC_OK;
        }
    for (size_t i = 0; i < b->n_empty; i++)
        if (b->empty[i]->id == id) {
            request_free(b, b->empty[i]);
            b->empty[i] = b->empty[--b->n_empty];
            return GPTC_OK;
        }
    return gptc_fail(GPTC_ERR_ARG, "gptc_batch_cancel: no request %llu (finished, cancelled or never added)",
                     (unsigned long long)id);
}

/* Room for n tokens in the pass buffers. */
static gptc_status reserve_tokens(gptc_batch *b, size_t n) {
    if (n <= b->cap_tok) return GPTC_OK;
    int32_t *p = realloc(b->ids, n * 4 * sizeof *p);
    if (!p) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    b->ids = p;
    b->pos = p + n;
    b->seq = p + 2 * n;
    b->rows = p + 3 * n;
    b->cap_tok = n;
    return GPTC_OK;
}

static gptc_status add_event(gptc_batch *b, size_t *n, uint64_t id, int32_t token, gptc_finish_reason why) {
    if (*n == b->cap_ev) {
        size_t cap = b->cap_ev ? 2 * b->cap_ev : 64;
        gptc_batch_event *e = realloc(b->ev, cap * sizeof *e);
        if (!e) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        b->ev = e;
        b->cap_ev = cap;
    }
    b->ev[(*n)++] = (gptc_batch_event){.id = id, .token = token, .finish = why, .logprob = NAN};
    return GPTC_OK;
}

/* The log-probabilities of request r's pick `next`, from the raw logits in
 * lp_raw, into its event; `row` (its place in this step) owns the arrays. */
static void add_logprobs(gptc_batch *b, const request *r, size_t row, int32_t next, gptc_batch_event *ev) {
    int32_t *ids = b->lp_ids + row * GPTC_MAX_TOP_LOGPROBS;
    float *vals = b->lp_vals + row * GPTC_MAX_TOP_LOGPROBS;
    ev->n_top = sample_logprobs(b->lp_raw, b->m->cfg.n_vocab, next, r->logprobs, &ev->logprob, ids, vals);
    ev->top_ids = ids;
    ev->top_logprobs = vals;
}

/* Starts waiting requests, in order, while there is room in the batch, the
 * cache and this step's prompt budget. */
static void admit(gptc_batch *b) {
    int64_t prefill = 0;
    while (b->head && b->n_run < (size_t)b->p.max_batch) {
        request *r = b->head;
        if (b->reserved + r->reserve > b->n_blocks) break;
        if (prefill > 0 && prefill + (int64_t)r->g.n_prompt > b->p.max_prefill_tokens) break;
        prefill += (int64_t)r->g.n_prompt;
        b->head = r->next;
        if (!b->head) b->tail = NULL;
        r->next = NULL;
        b->n_wait--;
        b->reserved += r->reserve;
        b->run[b->n_run++] = r;
    }
}

/* Request r's table: every block it reserved, at its first pass - a pass
 * the backend launches ahead (gptc_pass.continues) finds each next
 * position's block there. */
static void grow_table(gptc_batch *b, request *r) {
    while (r->n_table < r->reserve) r->table[r->n_table++] = kvb_alloc(&b->blocks);
}

/* The paged path: one pass for every running request. */
static gptc_status step_paged(gptc_batch *b, size_t *n_ev) {
    size_t n_tok = 0;
    for (size_t i = 0; i < b->n_run; i++) n_tok += b->run[i]->started ? 1 : b->run[i]->g.n_prompt;
    gptc_status st = reserve_tokens(b, n_tok);
    if (st != GPTC_OK) return st;
    size_t V = (size_t)b->m->cfg.n_vocab;
    if (!b->logits) {
        b->logits = malloc((size_t)b->p.max_batch * V * sizeof *b->logits);
        if (!b->logits) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for the logits of %d sequences", b->p.max_batch);
    }
    size_t t = 0;
    int more = 0; /* a request goes on past this step's token */
    for (size_t i = 0; i < b->n_run; i++) {
        request *r = b->run[i];
        more |= (int64_t)gen_seq_new_tokens(&r->g) + 1 < r->g.max_new;
        /* A new request feeds its prompt; a running one its last token. */
        size_t n = r->started ? 1 : r->g.n_prompt;
        const int32_t *src = r->started ? &r->g.seq[r->g.n - 1] : r->g.seq;
        grow_table(b, r);
        if (!r->started && b->device_pick && r->logprobs < 0 && b->m->backend->kv_sampler_new &&
            gen_seq_wants_sampler(&r->g)) {
            st = b->m->backend->kv_sampler_new(b->m, b->kv, &r->g.p, r->g.seq, (int32_t)r->g.n_prompt,
                                               (int32_t)(r->g.n_prompt + (size_t)r->g.max_new), &r->sampler);
            if (st != GPTC_OK) return st;
        }
        for (size_t k = 0; k < n; k++, t++) {
            b->ids[t] = src[k];
            b->pos[t] = r->n_kv + (int32_t)k;
            b->seq[t] = (int32_t)i;
        }
        b->rows[i] = (int32_t)t - 1;
        b->tables[i] = r->table;
        b->n_table[i] = r->n_table;
        b->samplers[i] = r->sampler;
        b->argmax_only[i] =
            (uint8_t)(b->device_pick && !r->sampler && r->logprobs < 0 && gen_seq_pick_is_argmax(&r->g));
        r->n_kv += (int32_t)n;
        r->started = 1;
    }
    gptc_pass pass = {.n_tokens = (int32_t)n_tok, .ids = b->ids, .pos = b->pos, .seq = b->seq,
                      .tables = b->tables, .n_logits = (int32_t)b->n_run, .logit_rows = b->rows,
                      .argmax_only = b->argmax_only, .next = b->next, .fast_decode = b->p.fast_decode,
                      .samplers = b->samplers, .n_table = b->n_table,
                      /* nothing waits to join the batch (sequences may still leave it) */
                      .continues = more && b->head == NULL};
    if ((st = b->m->backend->kv_eval(b->m, b->kv, &pass, b->logits)) != GPTC_OK) return st;
    /* Backwards, so that removing request i (the last one moves into its
     * place) leaves the ones still to visit where they were. */
    for (size_t i = b->n_run; i-- > 0;) {
        request *r = b->run[i];
        float *logits = b->logits + i * V;
        /* the raw logits, before gen_seq_pick's processors change them in place */
        if (r->logprobs >= 0) memcpy(b->lp_raw, logits, V * sizeof *logits);
        int32_t next = b->argmax_only[i] || r->sampler ? b->next[i] : gen_seq_pick(&r->g, logits);
        gptc_finish_reason why = gen_seq_push(&r->g, next);
        if (why == GPTC_FINISH_ERROR) return GPTC_ERR_NOMEM;
        if ((st = add_event(b, n_ev, r->id, next, why)) != GPTC_OK) return st;
        if (r->logprobs >= 0) add_logprobs(b, r, i, next, &b->ev[*n_ev - 1]);
        if (why != GPTC_FINISH_NONE) finish_running(b, i);
    }
    return GPTC_OK;
}

/* Without a paged cache: a session per request, stepped one by one. */
static gptc_status step_sessions(gptc_batch *b, size_t *n_ev) {
    size_t V = (size_t)b->m->cfg.n_vocab;
    if (!b->logits) {
        b->logits = malloc(V * sizeof *b->logits);
        if (!b->logits) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    gptc_status st;
    for (size_t i = b->n_run; i-- > 0;) {
        request *r = b->run[i];
        gen_seq *g = &r->g;
        int32_t next = 0;
        size_t n = r->started ? 1 : g->n_prompt;
        const int32_t *src = r->started ? &g->seq[g->n - 1] : g->seq;
        if (!r->started) {
            st = gptc_session_new(b->m, (int32_t)(g->n_prompt + (size_t)g->max_new), &r->sess);
            if (st != GPTC_OK) return st;
            r->on_device = gptc_session_can_sample(r->sess) && !getenv("GPTC_HOST_SAMPLING") && r->logprobs < 0 &&
                           gen_seq_device_can_pick(g);
            if (r->on_device && (st = gptc_session_sample_init(r->sess, &g->p, NULL, 0)) != GPTC_OK) return st;
            r->started = 1;
        }
        if (r->on_device) st = gptc_session_eval_sample(r->sess, src, n, &next);
        else st = gptc_session_eval(r->sess, src, n, 1, b->logits);
        if (st != GPTC_OK) return st;
        if (r->logprobs >= 0) memcpy(b->lp_raw, b->logits, V * sizeof *b->logits);
        if (!r->on_device) next = gen_seq_pick(g, b->logits);
        gptc_finish_reason why = gen_seq_push(g, next);
        if (why == GPTC_FINISH_ERROR) return GPTC_ERR_NOMEM;
        if ((st = add_event(b, n_ev, r->id, next, why)) != GPTC_OK) return st;
        if (r->logprobs >= 0) add_logprobs(b, r, i, next, &b->ev[*n_ev - 1]);
        if (why != GPTC_FINISH_NONE) finish_running(b, i);
    }
    return GPTC_OK;
}

gptc_status gptc_batch_step(gptc_batch *b, const gptc_batch_event **events, size_t *n_events) {
    if (!b || !events || !n_events) return gptc_fail(GPTC_ERR_ARG, "gptc_batch_step: NULL argument");
    *events = NULL;
    *n_events = 0;
    size_t n = 0;
    gptc_status st = GPTC_OK;
    while (b->n_empty && st == GPTC_OK) {
        request *r = b->empty[--b->n_empty];
        st = add_event(b, &n, r->id, -1, GPTC_FINISH_LENGTH);
        request_free(b, r);
    }
    admit(b);
    if (st == GPTC_OK && b->n_run) st = b->paged ? step_paged(b, &n) : step_sessions(b, &n);
    *events = b->ev;
    *n_events = n;
    return st;
}

gptc_batch_stats gptc_batch_get_stats(const gptc_batch *b) {
    gptc_batch_stats s = {0};
    if (!b) return s;
    s.running = b->n_run;
    s.waiting = b->n_wait + b->n_empty;
    s.kv_positions_total = (size_t)b->n_blocks * BLOCK_SIZE;
    s.kv_positions_reserved = (size_t)b->reserved * BLOCK_SIZE;
    if (b->paged) s.kv_positions_used = (size_t)(b->blocks.n_blocks - b->blocks.n_free) * BLOCK_SIZE;
    else
        for (size_t i = 0; i < b->n_run; i++)
            s.kv_positions_used += b->run[i]->started ? (size_t)b->run[i]->reserve * BLOCK_SIZE : 0;
    return s;
}

gptc_status gptc_generate_batch(gptc_model *m, const gptc_tokenizer *tok, size_t n,
                                const int32_t *const *prompts, const size_t *n_prompts,
                                const gptc_generate_params *params, const gptc_batch_params *bparams,
                                gptc_batch_token_fn fn, void *user, int32_t **out_ids, size_t *out_lens) {
    if (n && (!prompts || !n_prompts || !out_ids || !out_lens))
        return gptc_fail(GPTC_ERR_ARG, "gptc_generate_batch: NULL argument");
    for (size_t i = 0; i < n; i++) out_ids[i] = NULL, out_lens[i] = 0;
    gptc_batch *b = NULL;
    gptc_status st = gptc_batch_new(m, tok, bparams, &b);
    if (st != GPTC_OK) return st;
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    size_t *caps = calloc(n ? n : 1, sizeof *caps);
    if (!ids || !caps) st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    /* Requests get ids 1, 2, ... in order: id - 1 is the prompt's index. */
    for (size_t i = 0; i < n && st == GPTC_OK; i++) {
        st = gptc_batch_add(b, prompts[i], n_prompts[i], params, &ids[i]);
        if (st != GPTC_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", gptc_last_error());
            st = gptc_fail(st, "prompt %zu: %s", i + 1, msg);
        }
    }
    size_t left = n;
    while (st == GPTC_OK && left) {
        const gptc_batch_event *ev;
        size_t k;
        if ((st = gptc_batch_step(b, &ev, &k)) != GPTC_OK) break;
        for (size_t e = 0; e < k && st == GPTC_OK; e++) {
            size_t i = (size_t)(ev[e].id - ids[0]);
            int stop = 0;
            if (ev[e].token >= 0) {
                if (out_lens[i] == caps[i]) {
                    size_t cap = caps[i] ? 2 * caps[i] : 16;
                    int32_t *p = realloc(out_ids[i], cap * sizeof *p);
                    if (!p) {
                        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
                        break;
                    }
                    out_ids[i] = p;
                    caps[i] = cap;
                }
                out_ids[i][out_lens[i]++] = ev[e].token;
                stop = fn && fn(i, ev[e].token, user);
            }
            if (ev[e].finish != GPTC_FINISH_NONE) left--;
            else if (stop) {
                gptc_batch_cancel(b, ev[e].id);
                left--;
            }
        }
    }
    for (size_t i = 0; i < n && st == GPTC_OK; i++)
        if (!out_ids[i] && !(out_ids[i] = malloc(sizeof **out_ids)))
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    if (st != GPTC_OK)
        for (size_t i = 0; i < n; i++) {
            free(out_ids[i]);
            out_ids[i] = NULL;
            out_lens[i] = 0;
        }
    free(ids);
    free(caps);
    gptc_batch_free(b);
    return st;
}
