/*
 * paged.cu - the batch engine's paged K/V cache on the CUDA backend: the
 * kv_new, kv_free, kv_copy and kv_eval ops of backend.h.
 *
 * K and V of every layer live on the device in pools of blocks, (L,
 * n_blocks * block_size, C) each in the weight dtype: position j of a
 * sequence is row table[j / block_size] * block_size + j % block_size of its
 * layer's pool. A pass copies its integers (ids, positions, each token's
 * cache row and block table, the rows whose logits are wanted) to the device
 * in one transfer from pinned memory, runs the model on the device, and
 * copies back the logits of the requested rows, or only their pick when
 * the device picks (gptc_pass.argmax_only, samplers): at batch 32 that is
 * 128 bytes instead of 6.4 MB a step, and no argmax on the host. The argmax
 * or sampler kernel writes the picks into mapped pinned memory itself: a
 * copy after the graph cost ~7 us a pass (an H200, gpt2 batch 8 and 32).
 *
 * Batch invariance. The pass is cut into segments, runs of tokens of one
 * sequence at consecutive positions (a prompt, or one new token), and each
 * segment is computed with the kernels and launch shapes a session uses for
 * the same tokens in one eval (backend.cu's forward):
 *   - segments under LT_MIN_TOKENS tokens (every decode token) go through
 *     the GEMV kernels, all of them in one launch per product: a GEMV sums
 *     each token's outputs in an order that depends on nothing else (gemv.cu);
 *   - the longer segments (prompts) share one cuBLASLt product. Its
 *     algorithm sums every output over the whole K in one pass (backend.cu's
 *     lt_pick_whole_k), and then a row's bits do not depend on the rows
 *     beside it or on their number: measured, not documented by cuBLASLt -
 *     bench/lt_rows.cu on an H100 with cuBLASLt 13.1, and test_batch
 *     (GPTC_BATCH_SHAPE=gpt2, tests/gpu/prefill_check.sh) on each card the
 *     GPU checks run on. A session's prompt gets the same bits from a
 *     product of its own rows;
 *   - attention: the split kernel for the tokens of segments under
 *     ATT_SPLIT_MAXT (one launch, each query with its own position and block
 *     table), the tensor-core kernel for all the prompts that take it in one
 *     launch (a block per query tile of a prompt, as a launch of that prompt
 *     alone), another kernel per other segment; the block tables change
 *     where a row is read, never the arithmetic (attention.cu);
 *   - the final layer norm and the LM head (GEMV, per row) only for the
 *     logit rows, as a session computes its last position's.
 * So a token's logits are bitwise those a session gives its sequence when it
 * evaluated the same segments (the prompt in one eval, then one token per
 * eval), whatever else shares the pass: batched generation gives the tokens
 * of one prompt at a time. This rests on cuBLASLt being deterministic for a
 * given algorithm and shape (it is, on one GPU model), and holds for
 * everything but the persistent decode kernel (GPTC_CUDA_MEGA=1), which
 * sums in its own order.
 *
 * gptc_pass.fast_decode gives that up for speed: the short segments' tokens
 * (8 or more) then share cuBLASLt products, as a prompt of that many tokens
 * would, and the LM head too; tensor cores instead of a GEMV per token
 * on CUDA cores (gpt2-xl at batch 32: the products are compute-bound).
 *
 * Rows of the pass's activations: the short segments' tokens first (rows
 * 0 .. n_short - 1, in pass order), then the long segments whose QKV product
 * writes the cache, then those whose attention does (fresh_qkv), each group
 * contiguous from a row whose every buffer is 256-byte aligned (cuBLASLt's
 * assumption).
 *
 * A decode pass (one token of each sequence, each with its logits) replays
 * a CUDA graph captured once per token count: its kernels read every
 * integer of the pass from device memory, and its split kernel spans n_ctx
 * (blocks past a query's position exit at once), so one graph fits any
 * positions and block tables. Measured on an H200, gpt2: 0.375 against
 * 0.401 ms per step at batch 1, a few percent at 8 to 32.
 *
 * Errors: as backend.cu, a status and a message; bad positions, sequence
 * ids, logit rows and block ids of a pass are refused before any launch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.cuh"

#define PROF_MARKS 256

typedef struct {
    int32_t first, n; /* tokens [first, first + n) of the pass */
    int32_t row;      /* the row of its first token in the activations */
    int kind;         /* its attention kernel (CUDA_ATT_*) */
    int group;        /* 0: short; long, 1: its QKV product writes the cache, 2: fresh_qkv */
} segment;

typedef struct {
    int32_t n_blocks, block_size;
    size_t layer_rows; /* n_blocks * block_size */
    void *k, *v;       /* (L, layer_rows, C) dtype */
    /* The pass's workspace: stream, cuBLASLt workspace, and activations for
     * cap_rows rows (x, qkv, tmp, xn, att, fc), logits for cap_logits rows,
     * split-attention scratch and tickets. */
    cuda_session ws;
    int32_t cap_rows, cap_logits, cap_tickets;
    size_t cap_scratch;
    int32_t align; /* a long segment starts at a multiple of this row */
    /* The pass's integers: pinned staging and its device copy. */
    int32_t *h_int, *d_int;
    size_t cap_int;
    /* The logit rows' picks, written by the argmax or sampler kernel
     * straight into mapped pinned memory (h_next; d_next its device
     * address): no copy after the pass. NULL where the device cannot map
     * it, or with GPTC_CUDA_TOKEN_COPY=1: then into d_int and copied. */
    int32_t *h_next, *d_next;
    int32_t cap_next; /* picks a half: two halves, a pass's parity picks one */
    int token_copy;
    /* A one-row greedy head picks as it stores the logits (cuda_fuse, as a
     * session's step; GPTC_CUDA_FUSE_PICK=0 not): its blocks' partials and
     * the last block's ticket (zero between passes). */
    float *am_v;
    int32_t *am_i;
    int *am_ticket;
    /* A pass launched ahead (gptc_pass.continues; GPTC_BATCH_SPEC=0 never):
     * after a greedy decode pass its successor is launched at once on the
     * device's picks (its graph's embedding, cuda_embed_advance, turns the
     * integers into the next pass's in place) before the host has seen
     * them. The next kv_eval takes its picks if it asks for that pass or
     * for some of its rows (sequences that finished left); else it waits
     * for it and forgets it: its K/V rows are its sequences' own, at a
     * position rewritten before it is read, or never read. */
    int spec, spec_min, spec_live, par; /* spec_min: GPTC_BATCH_SPEC_MIN, passes of fewer tokens never */
    int32_t spec_T, spec_key, last_key;
    /* the pass in flight, per row: sequence, position, token, first entry
     * in spec_tab (its table's blocks), the block it writes, its table's
     * staged blocks on the device; take: per row of the pass asked for, its
     * row in the pass in flight */
    int32_t *spec_seq, *spec_pos, *spec_ids, *spec_tab_at, *spec_blk, *spec_take, *spec_nst, *spec_tab;
    int32_t cap_spec, cap_spec_tab;
    int32_t *spec_row_of; /* per cache block: the row in flight that writes it, or -1 */
    cudaEvent_t spec_ev[2];
    long spec_n[4]; /* launched, taken whole, taken in part, dropped (GPTC_BATCH_SPEC_STATS=1) */
    /* Host bookkeeping: segments, each token's row, per sequence id its
     * highest position in the pass and its table's offset in the staging. */
    segment *segs;
    int32_t cap_segs;
    int32_t *row_of;
    int32_t cap_tok;
    int32_t *seq_info;
    int32_t cap_seq;
    /* Decode passes (one token of each sequence, a logit row each) replay a
     * CUDA graph captured for their token count; reallocating any buffer
     * they use drops them all. GPTC_CUDA_NO_PASS_GRAPH=1 runs every pass
     * uncaptured (for comparisons). */
    cudaGraphExec_t *graphs;
    int32_t cap_graphs;
    int no_graph;   /* a capture failed (a driver without it): never again */
    int graph_fast; /* the fast_decode the graphs were captured with */
    /* The rows of the pass's samplers (cuda_sample_row): pinned staging and
     * its device copy, cap_srows rows. */
    cuda_sample_row *h_rows, *d_rows;
    size_t cap_srows;
    /* GPTC_CUDA_PASS_PROF=1: the times of decode passes (after the first
     * two), summed and printed by kv_free; =2: also per kernel kind, the
     * passes run uncaptured with an event after each kernel. */
    int prof, n_marks, prof_skip;
    cudaEvent_t ev[3], mev[PROF_MARKS];
    int mphase[PROF_MARKS];
    double prof_ms[3], phase_ms[8];
    long prof_n;
} cuda_kv;

/* A sequence's sampler (kv_sampler_new): its parameters, state, history and
 * mask in one device allocation. */
typedef struct {
    char *mem;
    cuda_sampler *p;
    cuda_sample_state *state;
    int32_t *hist;
    uint8_t *present;
    int32_t picks; /* passes that drew for it: each after the first appends */
} cuda_kv_sampler;

static const char *const PHASES[8] = {"",     "embed", "qkv",   "attention",
                                      "proj", "fc",    "mproj", "head"};

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && *v != '0';
}

static void drop_graphs(cuda_kv *kv) {
    for (int32_t i = 0; i < kv->cap_graphs; i++)
        if (kv->graphs[i]) cudaGraphExecDestroy(kv->graphs[i]), kv->graphs[i] = NULL;
}

static void ws_free_rows(cuda_session *w) {
    void *bufs[] = {w->x, w->qkv, w->qkv16, w->tmp, w->xn, w->att, w->fc};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        cudaFree(bufs[i]);
    w->x = w->qkv = w->tmp = NULL;
    w->qkv16 = w->xn = w->att = w->fc = NULL;
}

void cuda_kv_free(gptc_model *m, void *kv_) {
    (void)m;
    cuda_kv *kv = (cuda_kv *)kv_;
    if (!kv) return;
    cuda_session *w = &kv->ws;
    if (w->stream) cudaStreamSynchronize(w->stream);
    if (kv->spec_n[0] && env_flag("GPTC_BATCH_SPEC_STATS"))
        fprintf(stderr, "gptc cuda passes launched ahead: %ld, taken whole %ld, in part %ld, dropped %ld\n",
                kv->spec_n[0], kv->spec_n[1], kv->spec_n[2], kv->spec_n[3] + kv->spec_live);
    if (kv->prof && kv->prof_n)
        fprintf(
            stderr,
            "gptc cuda paged passes: %ld, per pass: device %.4f ms, logits to the host %.4f ms, "
            "kv_eval on the host %.4f ms\n",
            kv->prof_n, kv->prof_ms[0] / kv->prof_n, kv->prof_ms[1] / kv->prof_n,
            kv->prof_ms[2] / kv->prof_n);
    for (int i = 1; i < 8 && kv->prof == 2 && kv->prof_n; i++)
        fprintf(stderr, "  %-10s %.4f ms per pass\n", PHASES[i], kv->phase_ms[i] / kv->prof_n);
    for (int i = 0; i < 3; i++)
        if (kv->ev[i]) cudaEventDestroy(kv->ev[i]);
    for (int i = 0; i < PROF_MARKS; i++)
        if (kv->mev[i]) cudaEventDestroy(kv->mev[i]);
    drop_graphs(kv);
    free(kv->graphs);
    ws_free_rows(w);
    void *bufs[] = {kv->k,      kv->v,    w->logits, w->lt_ws,     w->att_scratch, w->att_tickets,
                    kv->d_int,  kv->d_rows, kv->am_v, kv->am_i,   kv->am_ticket};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        cudaFree(bufs[i]);
    cudaFreeHost(kv->h_int);
    cudaFreeHost(kv->h_rows);
    cudaFreeHost(kv->h_next);
    for (int i = 0; i < 2; i++)
        if (kv->spec_ev[i]) cudaEventDestroy(kv->spec_ev[i]);
    free(kv->spec_seq);
    free(kv->spec_tab);
    free(kv->spec_row_of);
    if (w->stream) cudaStreamDestroy(w->stream);
    (void)cudaGetLastError();
    free(kv->segs);
    free(kv->row_of);
    free(kv->seq_info);
    free(kv);
}

/* The smallest power of two r such that r rows of `bytes` each are a
 * multiple of 256 bytes (cudaMalloc's alignment, which cuBLASLt assumes). */
static int32_t rows_for_256(size_t bytes) {
    int32_t r = 1;
    while ((bytes * (size_t)r) % 256 != 0)
        r *= 2;
    return r;
}

static gptc_status kv_init(gptc_model *m, cuda_kv *kv, int32_t n_blocks, int32_t block_size) {
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, es = cm->es;
    int D = c->n_embd / c->n_head;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->layer_rows = (size_t)n_blocks * (size_t)block_size;
    if (kv->layer_rows > INT32_MAX)
        return gptc_fail(GPTC_ERR_RANGE,
                         "cuda: %d blocks of %d positions are more rows than a pass can address",
                         n_blocks, block_size);
    /* The one-block-per-query kernel keeps a query's scores in shared
     * memory: positions up to n_ctx, as a session of that length. */
    cudaDeviceProp prop;
    int dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    if (cuda_attention_smem(D, c->n_ctx) > prop.sharedMemPerBlockOptin)
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "cuda: n_ctx %d needs more shared memory for attention than the device "
                         "has; use --backend cpu",
                         c->n_ctx);
    CK(cuda_attention_prepare(D, c->n_ctx));
    CK(cudaStreamCreateWithFlags(&kv->ws.stream, cudaStreamNonBlocking));
    size_t pool = (size_t)c->n_layer * kv->layer_rows * C * es;
    cudaError_t e = cudaMalloc(&kv->k, pool);
    if (e == cudaSuccess) e = cudaMalloc(&kv->v, pool);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return gptc_fail(GPTC_ERR_NOMEM,
                         "cuda: cannot allocate a %zu MB K/V cache (%d blocks of %d positions): %s",
                         2 * pool >> 20, n_blocks, block_size, cudaGetErrorString(e));
    }
    /* Rows no sequence has written are never read (attention stops at the
     * query's position), but zeros make a stray read harmless, not NaN. */
    CK(cudaMemsetAsync(kv->k, 0, pool, kv->ws.stream));
    CK(cudaMemsetAsync(kv->v, 0, pool, kv->ws.stream));
    CK(cudaMalloc(&kv->ws.lt_ws, LT_WORKSPACE_BYTES));
    const char *pe = getenv("GPTC_CUDA_PASS_PROF");
    kv->prof = pe && *pe ? atoi(pe) : 0;
    kv->token_copy = getenv("GPTC_CUDA_TOKEN_COPY") != NULL;
    /* The profile times each pass alone: nothing launched ahead. */
    pe = getenv("GPTC_BATCH_SPEC");
    kv->spec = !(pe && *pe == '0') && !kv->prof;
    pe = getenv("GPTC_BATCH_SPEC_MIN");
    kv->spec_min = pe && *pe ? atoi(pe) : 1;
    kv->last_key = -1;
    if (kv->spec) {
        kv->spec_row_of = (int32_t *)malloc((size_t)n_blocks * sizeof(int32_t));
        if (!kv->spec_row_of) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        for (int32_t i = 0; i < n_blocks; i++)
            kv->spec_row_of[i] = -1;
    }
    for (int i = 0; i < 2 && kv->spec; i++)
        CK(cudaEventCreateWithFlags(&kv->spec_ev[i], cudaEventDisableTiming));
    pe = getenv("GPTC_CUDA_FUSE_PICK");
    if (cuda_gemv_fuses(cm->dt) && !(pe && *pe == '0')) {
        /* a pair for each block of the head's product: at most a block a 4 rows */
        size_t parts = (size_t)(c->n_vocab + 3) / 4;
        if (parts < CUDA_ARGMAX_PARTS) parts = CUDA_ARGMAX_PARTS;
        CK(cudaMalloc((void **)&kv->am_v, parts * sizeof(float)));
        CK(cudaMalloc((void **)&kv->am_i, parts * sizeof(int32_t)));
        CK(cudaMalloc((void **)&kv->am_ticket, sizeof(int)));
        CK(cudaMemsetAsync(kv->am_ticket, 0, sizeof(int), kv->ws.stream));
    }
    for (int i = 0; i < 3 && kv->prof; i++)
        CK(cudaEventCreate(&kv->ev[i]));
    for (int i = 0; i < PROF_MARKS && kv->prof == 2; i++)
        CK(cudaEventCreate(&kv->mev[i]));
    size_t row_bytes[] = {C * 4, 3 * C * 4, 3 * C * es, C * es, F * es}; /* x, qkv, qkv16, xn and att, fc */
    kv->align = 1;
    for (size_t i = 0; i < sizeof row_bytes / sizeof *row_bytes; i++) {
        int32_t r = rows_for_256(row_bytes[i]);
        if (r > kv->align) kv->align = r;
    }
    CK(cudaStreamSynchronize(kv->ws.stream));
    return GPTC_OK;
}

gptc_status cuda_kv_new(gptc_model *m, int32_t n_blocks, int32_t block_size, void **out) {
    *out = NULL;
    cuda_kv *kv = (cuda_kv *)calloc(1, sizeof *kv);
    if (!kv) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    gptc_status st = kv_init(m, kv, n_blocks, block_size);
    if (st != GPTC_OK) {
        cuda_kv_free(m, kv);
        return st;
    }
    *out = kv;
    return GPTC_OK;
}

static void spec_forget(cuda_kv *kv);

/* Block src's first n_pos rows into block dst, in every layer: one 2-D copy
 * for K and one for V, ordered before the next pass on the pass's stream. */
gptc_status cuda_kv_copy(gptc_model *m, void *kv_, int32_t dst, int32_t src, int32_t n_pos) {
    cuda_kv *kv = (cuda_kv *)kv_;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    if (n_pos <= 0 || dst == src) return GPTC_OK;
    /* A pass launched ahead read the cache before this copy: it no longer
     * stands for the pass asked for next (the stream orders the rest). */
    if (kv->spec_live) spec_forget(kv), kv->spec_n[3]++;
    size_t row = (size_t)m->cfg.n_embd * cm->es, pitch = kv->layer_rows * row;
    size_t d = (size_t)dst * kv->block_size * row, s = (size_t)src * kv->block_size * row;
    CK(cudaMemcpy2DAsync((char *)kv->k + d, pitch, (char *)kv->k + s, pitch, (size_t)n_pos * row,
                         (size_t)m->cfg.n_layer, cudaMemcpyDeviceToDevice, kv->ws.stream));
    CK(cudaMemcpy2DAsync((char *)kv->v + d, pitch, (char *)kv->v + s, pitch, (size_t)n_pos * row,
                         (size_t)m->cfg.n_layer, cudaMemcpyDeviceToDevice, kv->ws.stream));
    return GPTC_OK;
}

/* Grows a host array of `es`-byte elements to hold n. */
static gptc_status grow(void **p, int32_t *cap, int32_t n, size_t es) {
    if (n <= *cap) return GPTC_OK;
    int32_t c = *cap ? *cap : 16;
    while (c < n)
        c = c > INT32_MAX / 2 ? n : 2 * c;
    void *q = realloc(*p, (size_t)c * es);
    if (!q) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    *p = q;
    *cap = c;
    return GPTC_OK;
}

/* Device buffers for a pass of `rows` activation rows, `n_logits` logit rows
 * (chunked as a session's), `scratch` floats and `tickets` tickets of split
 * attention. Buffers only grow (by doubling), so passes of a running batch
 * reallocate nothing. The stream is idle here (the last pass synchronised). */
static gptc_status reserve(cuda_kv *kv, const gptc_model *m, int32_t rows, int32_t n_logits,
                           size_t scratch, int32_t tickets) {
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    cuda_session *w = &kv->ws;
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, V = (size_t)c->n_vocab, es = cm->es;
    size_t wide = 3 * C > F ? 3 * C : F;
    if (n_logits > rows) rows = n_logits; /* the final layer norm's rows go to xn */
    if (rows > kv->cap_rows) {
        drop_graphs(kv);
        int32_t cap = kv->cap_rows ? kv->cap_rows : 16;
        while (cap < rows)
            cap = cap > INT32_MAX / 2 ? rows : 2 * cap;
        ws_free_rows(w);
        kv->cap_rows = 0;
        size_t N = (size_t)cap;
        CK(cudaMalloc((void **)&w->x, N * C * sizeof(float)));
        CK(cudaMalloc((void **)&w->qkv, N * 3 * C * sizeof(float)));
        if (cm->dt != GPTC_DTYPE_F32) CK(cudaMalloc(&w->qkv16, N * 3 * C * es)); /* fresh_qkv's */
        CK(cudaMalloc((void **)&w->tmp, N * wide * sizeof(float)));
        CK(cudaMalloc(&w->xn, N * C * es));
        CK(cudaMalloc(&w->att, N * C * es));
        CK(cudaMalloc(&w->fc, N * F * es));
        kv->cap_rows = cap;
    }
    size_t per_chunk = LOGITS_CHUNK_BYTES / (V * sizeof(float));
    int32_t lrows = (int32_t)(per_chunk < 1 ? 1 : per_chunk);
    if (n_logits < lrows) lrows = n_logits;
    if (lrows > kv->cap_logits) {
        drop_graphs(kv);
        cudaFree(w->logits);
        w->logits = NULL;
        kv->cap_logits = 0;
        CK(cudaMalloc((void **)&w->logits, (size_t)lrows * V * sizeof(float)));
        kv->cap_logits = lrows;
    }
    w->logit_rows = kv->cap_logits;
    if (scratch > kv->cap_scratch) {
        drop_graphs(kv);
        cudaFree(w->att_scratch);
        w->att_scratch = NULL;
        kv->cap_scratch = 0;
        CK(cudaMalloc((void **)&w->att_scratch, scratch * sizeof(float)));
        kv->cap_scratch = scratch;
    }
    if (tickets > kv->cap_tickets) {
        drop_graphs(kv);
        cudaFree(w->att_tickets);
        w->att_tickets = NULL;
        kv->cap_tickets = 0;
        CK(cudaMalloc((void **)&w->att_tickets, (size_t)tickets * sizeof(int)));
        /* The split kernel leaves the tickets as it found them: zero. */
        CK(cudaMemsetAsync(w->att_tickets, 0, (size_t)tickets * sizeof(int), w->stream));
        kv->cap_tickets = tickets;
    }
    return GPTC_OK;
}

/* Pinned staging *h and its device twin *d with room for n elements of es
 * bytes (capacity *cap, doubling from `first`); growing drops the graphs,
 * which captured the old device address. */
static gptc_status reserve_pinned(cuda_kv *kv, void **h, void **d, size_t *cap, size_t n, size_t es,
                                  size_t first) {
    if (n <= *cap) return GPTC_OK;
    drop_graphs(kv);
    size_t c = *cap ? *cap : first;
    while (c < n)
        c *= 2;
    cudaFreeHost(*h);
    cudaFree(*d);
    *h = *d = NULL;
    *cap = 0;
    CK(cudaMallocHost(h, c * es));
    CK(cudaMalloc(d, c * es));
    *cap = c;
    return GPTC_OK;
}

/* Pinned staging and device room for n integers. */
static gptc_status reserve_ints(cuda_kv *kv, size_t n) {
    return reserve_pinned(kv, (void **)&kv->h_int, (void **)&kv->d_int, &kv->cap_int, n, sizeof(int32_t),
                          1024);
}

/* Mapped room for n picks (kv->d_next NULL: the device cannot map pinned
 * memory, or GPTC_CUDA_TOKEN_COPY is set - the picks go through d_int). */
static gptc_status reserve_next(cuda_kv *kv, int32_t n) {
    if (kv->token_copy || n <= kv->cap_next) return GPTC_OK;
    drop_graphs(kv);
    int32_t c = kv->cap_next ? kv->cap_next : 64;
    while (c < n)
        c = c > INT32_MAX / 2 ? n : 2 * c;
    cudaFreeHost(kv->h_next);
    kv->h_next = kv->d_next = NULL;
    kv->cap_next = 0;
    if (cudaHostAlloc((void **)&kv->h_next, 2 * (size_t)c * sizeof(int32_t), cudaHostAllocMapped) != cudaSuccess ||
        cudaHostGetDevicePointer((void **)&kv->d_next, kv->h_next, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFreeHost(kv->h_next);
        kv->h_next = kv->d_next = NULL;
        kv->token_copy = 1;
        return GPTC_OK;
    }
    kv->cap_next = c;
    return GPTC_OK;
}

/* The pass's layout on the device: kv->d_int holds, for rows 0 .. rows - 1,
 * ids, pos, cache row and table offset, then the logit rows, room for their
 * argmax, then the tables (so that a decode pass's pointers depend on its
 * token count only, as its graph needs). */
typedef struct {
    int32_t rows, n_short, n_segs, max_pos_short;
    const int32_t *ids, *pos, *crow, *tab, *lrows, *tables;
    int32_t *next;  /* the argmax of each logit row: kv->d_next, or d_int + next_at */
    size_t next_at;
    /* The long segments' rows: from long0 to the end; the group whose QKV
     * product writes the cache, [cached0, + n_cached), and the fresh one,
     * [fresh0, + n_fresh): fresh_segs of them, the longest fresh_max, their
     * (first row, count) pairs at fsegs (after the tables). */
    int32_t long0, cached0, n_cached, fresh0, n_fresh, fresh_segs, fresh_max;
    const int32_t *fsegs;
} pass_layout;

/* How much of sequence s's table a pass stages: as far as its highest
 * position in the pass, or the whole table (up to n_ctx) where the caller
 * may ask for the pass after (gptc_pass.continues) - passes launched ahead,
 * advanced on the device, find their blocks there. */
static int32_t staged_blocks(const gptc_pass *p, int32_t s, int32_t max_pos, int32_t bs, int32_t n_ctx) {
    int32_t nb = max_pos / bs + 1, most = (n_ctx + bs - 1) / bs;
    if (!p->continues || !p->n_table) return nb;
    int32_t n = p->n_table[s] < most ? p->n_table[s] : most;
    return n > nb ? n : nb;
}

/* Cuts the pass into segments, places them in rows, and stages and uploads
 * its integers. Checks what would make a kernel read or write out of bounds:
 * positions past n_ctx, blocks past the pool. */
static gptc_status stage_pass(cuda_kv *kv, const gptc_model *m, const gptc_pass *p,
                              pass_layout *lay) {
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    int32_t T = p->n_tokens, bs = kv->block_size;
    CKST(grow((void **)&kv->row_of, &kv->cap_tok, T, sizeof(int32_t)));
    int32_t n_segs = 0, max_seq = -1;
    for (int32_t t = 0; t < T; t++) {
        if (p->pos[t] < 0 || p->pos[t] >= c->n_ctx)
            return gptc_fail(GPTC_ERR_RANGE, "kv_eval: token %d is at position %d, outside [0, %d)",
                             t, p->pos[t], c->n_ctx);
        if (p->seq[t] < 0)
            return gptc_fail(GPTC_ERR_ARG, "kv_eval: token %d has sequence %d", t, p->seq[t]);
        if (p->seq[t] > max_seq) max_seq = p->seq[t];
        if (t == 0 || p->seq[t] != p->seq[t - 1] || p->pos[t] != p->pos[t - 1] + 1) {
            CKST(grow((void **)&kv->segs, &kv->cap_segs, n_segs + 1, sizeof(segment)));
            kv->segs[n_segs++] = (segment){t, 0, 0, 0, 0};
        }
        kv->segs[n_segs - 1].n++;
    }
    /* Rows: the short segments, then the long ones whose QKV product
     * writes the cache, then the fresh ones; each group of long ones from
     * an aligned row. */
    int32_t rows = 0, max_pos_short = 0, group0[3] = {0, 0, 0}, group_n[3] = {0, 0, 0};
    int32_t fresh_segs = 0, fresh_max = 0;
    for (int32_t s = 0; s < n_segs; s++) {
        segment *g = &kv->segs[s];
        g->kind = cuda_attention_kind(cm->dt, g->n, c->n_embd, c->n_head);
        g->group = g->n < LT_MIN_TOKENS ? 0 : fresh_qkv(cm, g->n, g->kind) ? 2 : 1;
        group_n[g->group] += g->n;
    }
    for (int grp = 0; grp < 3; grp++) {
        if (grp && group_n[grp]) rows = (rows + kv->align - 1) / kv->align * kv->align;
        group0[grp] = rows;
        for (int32_t s = 0; s < n_segs; s++) {
            segment *g = &kv->segs[s];
            if (g->group != grp) continue;
            g->row = rows;
            for (int32_t k = 0; k < g->n; k++)
                kv->row_of[g->first + k] = rows + k;
            if (!grp) {
                int32_t last = p->pos[g->first + g->n - 1];
                if (last > max_pos_short) max_pos_short = last;
            }
            if (grp == 2) {
                fresh_segs++;
                if (g->n > fresh_max) fresh_max = g->n;
            }
            rows += g->n;
        }
    }
    int32_t n_short = group_n[0];
    /* Each sequence's table, as far as its highest position in the pass
     * (seq_max; -1 for ids not in the pass), at seq_off in the tables. */
    if (max_seq >= INT32_MAX / 2)
        return gptc_fail(GPTC_ERR_RANGE, "kv_eval: sequence id %d", max_seq);
    CKST(grow((void **)&kv->seq_info, &kv->cap_seq, 2 * (max_seq + 1), sizeof(int32_t)));
    int32_t *seq_max = kv->seq_info, *seq_off = kv->seq_info + max_seq + 1;
    for (int32_t s = 0; s <= max_seq; s++)
        seq_max[s] = -1;
    for (int32_t t = 0; t < T; t++)
        if (p->pos[t] > seq_max[p->seq[t]]) seq_max[p->seq[t]] = p->pos[t];
    size_t n_tab = 0;
    for (int32_t s = 0; s <= max_seq; s++)
        if (seq_max[s] >= 0) n_tab += (size_t)staged_blocks(p, s, seq_max[s], bs, c->n_ctx);
    size_t base_l = 4 * (size_t)rows, base_n = base_l + (size_t)p->n_logits;
    /* the fresh segments' pairs are read as int2: an even offset */
    size_t base_t = base_n + (size_t)p->n_logits, base_s = (base_t + n_tab + 1) & ~(size_t)1;
    CKST(reserve_ints(kv, base_s + 2 * (size_t)fresh_segs));
    CKST(reserve_next(kv, p->n_logits));
    int32_t *h = kv->h_int, *ids = h, *pos = h + rows, *crow = h + 2 * rows, *tab = h + 3 * rows;
    int32_t *tables = h + base_t;
    size_t at = 0;
    for (int32_t s = 0; s <= max_seq; s++) {
        if (seq_max[s] < 0) continue;
        int32_t nb = staged_blocks(p, s, seq_max[s], bs, c->n_ctx);
        for (int32_t k = 0; k < nb; k++) {
            int32_t b = p->tables[s][k];
            if (b < 0 || b >= kv->n_blocks)
                return gptc_fail(GPTC_ERR_RANGE,
                                 "kv_eval: sequence %d's block %d is %d, outside [0, %d)", s, k, b,
                                 kv->n_blocks);
            tables[at + (size_t)k] = b;
        }
        seq_off[s] = (int32_t)at;
        at += (size_t)nb;
    }
    /* Alignment padding rows: token 0 of the vocabulary at position 0, never
     * read by a product, attention or the logits. */
    memset(h, 0, 4 * (size_t)rows * sizeof(int32_t));
    for (int32_t t = 0; t < T; t++) {
        int32_t r = kv->row_of[t], q = p->pos[t], s = p->seq[t];
        ids[r] = p->ids[t];
        pos[r] = q;
        crow[r] = p->tables[s][q / bs] * bs + q % bs;
        tab[r] = seq_off[s];
    }
    for (int32_t i = 0; i < p->n_logits; i++)
        h[base_l + (size_t)i] = kv->row_of[p->logit_rows[i]];
    int32_t *fs = h + base_s;
    for (int32_t s = 0; s < n_segs; s++) {
        const segment *g = &kv->segs[s];
        if (g->group != 2) continue;
        *fs++ = g->row;
        *fs++ = g->n;
    }
    CK(cudaMemcpyAsync(kv->d_int, h, (base_s + 2 * (size_t)fresh_segs) * sizeof(int32_t), cudaMemcpyHostToDevice,
                       kv->ws.stream));
    int32_t *d = kv->d_int;
    memset(lay, 0, sizeof *lay);
    lay->rows = rows, lay->n_short = n_short, lay->n_segs = n_segs, lay->max_pos_short = max_pos_short;
    lay->ids = d, lay->pos = d + rows, lay->crow = d + 2 * rows, lay->tab = d + 3 * rows;
    lay->lrows = d + base_l, lay->tables = d + base_t, lay->next_at = base_n;
    lay->next = kv->d_next ? kv->d_next : d + base_n;
    lay->long0 = group_n[1] ? group0[1] : group0[2]; /* = rows when there are none */
    lay->cached0 = group0[1], lay->n_cached = group_n[1];
    lay->fresh0 = group0[2], lay->n_fresh = group_n[2];
    lay->fresh_segs = fresh_segs, lay->fresh_max = fresh_max;
    lay->fsegs = d + base_s;
    return GPTC_OK;
}

/* GPTC_CUDA_PASS_PROF=2: an event after the kernels of a phase. */
static void mark(cuda_kv *kv, int phase) {
    if (kv->prof != 2 || kv->n_marks >= PROF_MARKS) return;
    cudaEventRecord(kv->mev[kv->n_marks], kv->ws.stream);
    kv->mphase[kv->n_marks++] = phase;
}

/* The product of rows [row, row + n) of the pass (n >= LT_MIN_TOKENS):
 * pass_product's call for the long segments. qkv16: the fresh rows' place
 * for a QKV product whose attention fills the cache, else NULL. */
static gptc_status rows_product(cuda_session *ws, const cuda_model *cm, int32_t row, int32_t n, const void *in,
                                size_t in_es, const float *ln_w, const float *ln_b, float eps, const void *w,
                                int ldw, int I, int O, cuda_epi e, size_t out_es, void *qkv16) {
    const void *gin = (const char *)in + (size_t)row * I * in_es;
    cuda_epi ge = e;
    ge.out = (char *)e.out + (size_t)row * e.ldo * out_es;
    if (e.rows) ge.rows = e.rows + row;
    if (e.mode == EPI_QKV) ge.qkv16 = qkv16 ? (char *)qkv16 + (size_t)row * 3 * e.C * cm->es : NULL;
    if (ln_w)
        return cuda_ln_linear(cm, ws, (const float *)gin, (char *)ws->xn + (size_t)row * I * cm->es, ln_w, ln_b,
                              eps, w, ldw, n, I, O, ge);
    return cuda_linear(cm, ws, gin, w, ldw, n, I, O, ge);
}

/*
 * One linear layer of the pass: the short rows at once (GEMV kernels, or
 * with `lt` one cuBLASLt product), then the long segments' rows in one
 * cuBLASLt product (two for the QKV: the group whose product writes the
 * cache, and the fresh one). in: rows of in_es bytes per element (the fp32
 * residual when ln_w is set: the layer norm comes first, fused into the
 * GEMV or through ws.xn); e writes row 0, out_es bytes per output element,
 * and its cache rows (QKV) follow the rows.
 */
static gptc_status pass_product(cuda_kv *kv, const cuda_model *cm, const pass_layout *lay, int lt,
                                const void *in, size_t in_es, const float *ln_w, const float *ln_b,
                                float eps, const void *w, int ldw, int I, int O, cuda_epi e,
                                size_t out_es) {
    cuda_session *ws = &kv->ws;
    int ns = lay->n_short;
    if (lt && ln_w)
        CKST(cuda_ln_linear(cm, ws, (const float *)in, ws->xn, ln_w, ln_b, eps, w, ldw, ns, I, O, e));
    else if (lt)
        CKST(cuda_linear(cm, ws, in, w, ldw, ns, I, O, e));
    else if (ns && ln_w)
        CK(cuda_gemv_ln(cm->dt, (const float *)in, ln_w, ln_b, eps, w, ldw, ns, I, O, e, ws->xn,
                        ws->stream));
    else if (ns)
        CK(cuda_gemv(cm->dt, in, w, ldw, ns, I, O, e, ws->stream));
    static int per_seg = -1; /* GPTC_PREFILL_PER_SEGMENT=1: a product per long segment (the A/B) */
    if (per_seg < 0) per_seg = env_flag("GPTC_PREFILL_PER_SEGMENT");
    if (per_seg) {
        for (int32_t s = 0; s < lay->n_segs; s++) {
            const segment *g = &kv->segs[s];
            if (g->group)
                CKST(rows_product(ws, cm, g->row, g->n, in, in_es, ln_w, ln_b, eps, w, ldw, I, O, e, out_es,
                                  g->group == 2 ? ws->qkv16 : NULL));
        }
        return GPTC_OK;
    }
    if (e.mode != EPI_QKV) {
        /* The rows between the two groups, if any (alignment), are token 0
         * at position 0 from the embedding on and zeros from the attention
         * (enqueue_blocks): computed, never read. */
        if (lay->rows > lay->long0)
            CKST(rows_product(ws, cm, lay->long0, lay->rows - lay->long0, in, in_es, ln_w, ln_b, eps, w, ldw,
                              I, O, e, out_es, NULL));
        return GPTC_OK;
    }
    if (lay->n_cached)
        CKST(rows_product(ws, cm, lay->cached0, lay->n_cached, in, in_es, ln_w, ln_b, eps, w, ldw, I, O, e,
                          out_es, NULL));
    if (lay->n_fresh)
        CKST(rows_product(ws, cm, lay->fresh0, lay->n_fresh, in, in_es, ln_w, ln_b, eps, w, ldw, I, O, e,
                          out_es, ws->qkv16));
    return GPTC_OK;
}

/*
 * The embedding and every layer for the pass laid out in `lay`. split_len:
 * more than the position of every token of the short segments (the split
 * kernel's span; n_ctx when the launch is captured, so that the graph fits
 * every later pass of the same shape).
 */
static gptc_status enqueue_blocks(cuda_kv *kv, const gptc_model *m, const gptc_pass *p,
                                  const pass_layout *lay, int short_split, int split_len,
                                  const int32_t *adv = NULL) {
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    cuda_session *w = &kv->ws;
    cudaStream_t st = w->stream;
    int C = c->n_embd, F = c->n_inner, NH = c->n_head, Cp = cm->Cp, Fp = cm->Fp;
    size_t es = cm->es;
    float eps = c->layer_norm_epsilon;
    mark(kv, 0);
    if (adv) /* GPTC_BATCH_SPEC: the pass before's integers advanced on its picks */
        CK(cuda_embed_advance(cm->dt, w->x, cm->wte, Cp, cm->wpe, (int32_t *)lay->ids, (int32_t *)lay->pos,
                              (int32_t *)lay->crow, lay->tab, lay->tables, kv->block_size, adv, lay->rows, C, st));
    else
        CK(cuda_embed_at(cm->dt, w->x, cm->wte, Cp, cm->wpe, lay->ids, lay->pos, lay->rows, C, st));
    mark(kv, 1);
    /* The rows between the two groups of prompts (alignment; only where a
     * model's rows are not 256-byte multiples) go through the products
     * after the attention, which never writes them: zeros, not stale rows. */
    int32_t gap0 = lay->cached0 + lay->n_cached;
    if (lay->n_cached && lay->n_fresh && lay->fresh0 > gap0)
        CK(cudaMemsetAsync((char *)w->att + (size_t)gap0 * C * es, 0, (size_t)(lay->fresh0 - gap0) * C * es, st));
    size_t layer = kv->layer_rows * (size_t)C * es;
    int ns = lay->n_short;
    /* fast_decode: the short rows' products through cuBLASLt (tensor
     * cores), as one prompt of ns tokens would run. */
    int lt = p->fast_decode && ns >= LT_MIN_TOKENS;
    for (int l = 0; l < c->n_layer; l++) {
        const cuda_layer *y = &cm->layers[l];
        char *kl = (char *)kv->k + l * layer, *vl = (char *)kv->v + l * layer;
        float scale = gptc_attn_scale(c, l);

        /* LN1 + QKV, K and V into each token's cache row. */
        cuda_epi e = epi_qkv(y, w->qkv, C, kl, vl);
        e.rows = lay->crow;
        CKST(pass_product(kv, cm, lay, lt, w->x, sizeof(float), y->ln1_w, y->ln1_b, eps, y->attn_w,
                          Cp, C, 3 * C, e, sizeof(float)));

        mark(kv, 2);
        /* Attention over each token's own sequence. */
        static int solo_off = -1; /* GPTC_ATT_SOLO=0: the A/B of reading old rows before the PDL wait */
        if (solo_off < 0) solo_off = getenv("GPTC_ATT_SOLO") && !env_flag("GPTC_ATT_SOLO");
        cuda_kv_map map = {lay->pos, lay->tables, lay->tab, kv->block_size,
                           lay->n_segs == lay->rows && !solo_off, NULL};
        if (ns && short_split)
            CK(cuda_attention_run(CUDA_ATT_SPLIT, cm->dt, w->att, w->qkv, kl, vl, map, ns, C, NH,
                                  split_len, scale, w->att_scratch, w->att_tickets, st));
        static int att_per_seg = -1; /* GPTC_PREFILL_ATT_PER_SEGMENT=1: an attention launch per prompt */
        if (att_per_seg < 0) att_per_seg = env_flag("GPTC_PREFILL_ATT_PER_SEGMENT");
        for (int32_t s = 0; s < lay->n_segs; s++) {
            const segment *g = &kv->segs[s];
            if ((short_split && g->group == 0) || (g->group == 2 && !att_per_seg)) continue;
            cuda_kv_map gm = {lay->pos + g->row, lay->tables, lay->tab + g->row, kv->block_size, 0,
                              g->group == 2 ? (char *)w->qkv16 + (size_t)g->row * 3 * C * es : NULL};
            CK(cuda_attention_run(g->kind, cm->dt, (char *)w->att + (size_t)g->row * C * es,
                                  w->qkv + (size_t)g->row * 3 * C, kl, vl, gm, g->n, C, NH,
                                  p->pos[g->first + g->n - 1] + 1, scale, w->att_scratch,
                                  w->att_tickets, st));
        }
        if (lay->fresh_segs && !att_per_seg) {
            /* The fresh prompts in one launch, each query tile as its prompt's own launch has it. */
            cuda_kv_map fm = {lay->pos, lay->tables, lay->tab, kv->block_size, 0, w->qkv16};
            CK(cuda_attention_mma_segs(cm->dt, w->att, w->qkv, kl, vl, fm, lay->fsegs, lay->fresh_segs,
                                       lay->fresh_max, C, NH, scale, st));
        }

        mark(kv, 3);
        /* Projection, LN2 + FC, MLP projection, each on the short rows at
         * once and on the long ones at once. */
        CKST(pass_product(kv, cm, lay, lt, w->att, es, NULL, NULL, 0.0f, y->proj_w, Cp, C, C,
                          epi(EPI_RESID, y->proj_b, w->x, C), sizeof(float)));
        mark(kv, 4);
        e = epi_fc(y, m->act, w->fc, F);
        CKST(pass_product(kv, cm, lay, lt, w->x, sizeof(float), y->ln2_w, y->ln2_b, eps, y->fc_w, Cp,
                          C, F, e, es));
        mark(kv, 5);
        CKST(pass_product(kv, cm, lay, lt, w->fc, es, NULL, NULL, 0.0f, y->mproj_w, Fp, F, C,
                          epi(EPI_RESID, y->mproj_b, w->x, C), sizeof(float)));
        mark(kv, 6);
    }
    return GPTC_OK;
}

/* Final layer norm of the logit rows, and the LM head (GEMV rows, as a
 * session's last position) for rows [r, r + nr) into ws.logits; with
 * `argmax`, each row's argmax into lay->next; with `sampled`, the draw of
 * each row that kv->d_rows gives a sampler, there too. */
static gptc_status enqueue_head(cuda_kv *kv, const gptc_model *m, const gptc_pass *p,
                                const pass_layout *lay, int32_t n_logits, int32_t r, int32_t nr,
                                int argmax, int sampled) {
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    cuda_session *w = &kv->ws;
    int C = c->n_embd;
    if (r == 0)
        CK(cuda_layernorm_rows(cm->dt, w->xn, w->x, lay->lrows, cm->lnf_w, cm->lnf_b, n_logits, C,
                               c->layer_norm_epsilon, w->stream));
    const void *in = (const char *)w->xn + (size_t)r * C * cm->es;
    cuda_epi e = epi(EPI_STORE, NULL, w->logits, c->n_vocab);
    if (argmax && !sampled && nr == 1 && kv->am_ticket && !p->fast_decode) {
        /* greedy, one row: the product picks as it stores the logits */
        cuda_fuse f;
        memset(&f, 0, sizeof f);
        cuda_pick pk = {kv->am_v, kv->am_i, kv->am_ticket, lay->next + r, NULL, NULL, 0};
        f.pick = pk;
        CK(cuda_gemv(cm->dt, in, cm->lm_head, cm->Cp, nr, C, c->n_vocab, e, w->stream, &f));
    } else {
        if (p->fast_decode) CKST(cuda_linear(cm, w, in, cm->lm_head, cm->Cp, nr, C, c->n_vocab, e));
        else CK(cuda_gemv(cm->dt, in, cm->lm_head, cm->Cp, nr, C, c->n_vocab, e, w->stream));
        if (argmax) CK(cuda_argmax_rows(w->logits, c->n_vocab, nr, lay->next + r, w->stream));
    }
    /* After the argmax: a sampler's draw replaces it. */
    if (sampled) CK(cuda_sample_rows(kv->d_rows + r, nr, w->logits, c->n_vocab, lay->next + r, w->stream));
    mark(kv, 7);
    return GPTC_OK;
}

/* Logit rows [r, r + nr) of the pass, in ws.logits' first nr rows, to the
 * caller: the logits of each run of rows that want them, to dst (directly
 * into pageable memory, the copy returns when it is complete: through a
 * pinned buffer and a memcpy measured no faster, bench/NOTES-cuda.md); the
 * argmax of the others to the pinned staging. */
static int picked_on_device(const gptc_pass *p, int32_t i) {
    return (p->argmax_only && p->argmax_only[i]) || (p->samplers && p->samplers[i]);
}

/* Whether token t of p is a row a pass launched ahead can stand for: its
 * own logit row, picked greedily on the device (not drawn by a sampler). */
static int greedy_row(const gptc_pass *p, int32_t t) {
    return p->argmax_only && p->argmax_only[t] && !(p->samplers && p->samplers[t]) && p->logit_rows[t] == t;
}

static gptc_status copy_rows(cuda_kv *kv, const gptc_pass *p, const pass_layout *lay, float *dst,
                             int32_t r, int32_t nr, size_t V) {
    cudaStream_t st = kv->ws.stream;
    for (int32_t i = 0; i < nr;) {
        if (picked_on_device(p, r + i)) {
            i++;
            continue;
        }
        int32_t j = i;
        while (j < nr && !picked_on_device(p, r + j))
            j++;
        CK(cudaMemcpyAsync(dst + (size_t)(r + i) * V, kv->ws.logits + (size_t)i * V,
                           (size_t)(j - i) * V * sizeof(float), cudaMemcpyDeviceToHost, st));
        i = j;
    }
    if ((p->argmax_only || p->samplers) && !kv->d_next)
        CK(cudaMemcpyAsync(kv->h_int + lay->next_at + r, lay->next + r, (size_t)nr * sizeof(int32_t),
                           cudaMemcpyDeviceToHost, st));
    return GPTC_OK;
}

/* Captures the decode pass of lay->rows tokens, with samplers or not, into
 * kv->graphs[key]. */
static gptc_status capture(cuda_kv *kv, const gptc_model *m, const gptc_pass *p,
                           const pass_layout *lay, int32_t key, int sampled, const int32_t *adv = NULL) {
    cudaStream_t st = kv->ws.stream;
    int32_t T = lay->rows;
    if (key >= kv->cap_graphs) {
        int32_t old = kv->cap_graphs;
        CKST(grow((void **)&kv->graphs, &kv->cap_graphs, key + 1, sizeof(cudaGraphExec_t)));
        for (int32_t i = old; i < kv->cap_graphs; i++)
            kv->graphs[i] = NULL;
    }
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    gptc_status gs = enqueue_blocks(kv, m, p, lay, 1, m->cfg.n_ctx, adv);
    if (gs == GPTC_OK) gs = enqueue_head(kv, m, p, lay, T, 0, T, 1, sampled);
    cudaGraph_t g = NULL;
    /* Capture must end whatever happened inside it. */
    cudaError_t e = cudaStreamEndCapture(st, &g);
    const char *what = "cudaStreamEndCapture";
    if (gs == GPTC_OK && e == cudaSuccess) {
        e = cudaGraphInstantiate(&kv->graphs[key], g, 0);
        what = "cudaGraphInstantiate";
    }
    if (g) cudaGraphDestroy(g);
    if (gs != GPTC_OK) return gs;
    if (e != cudaSuccess) {
        kv->graphs[key] = NULL;
        return cuda_error(e, what);
    }
    return GPTC_OK;
}

/* The pass's sampler rows to the device: each logit row's sampler, the
 * token it appends (the row's token, from its second pick on). */
static gptc_status stage_samplers(cuda_kv *kv, const gptc_pass *p) {
    int32_t n = p->n_logits;
    CKST(reserve_pinned(kv, (void **)&kv->h_rows, (void **)&kv->d_rows, &kv->cap_srows, (size_t)n,
                        sizeof(cuda_sample_row), 32));
    for (int32_t i = 0; i < n; i++) {
        const cuda_kv_sampler *s = (const cuda_kv_sampler *)p->samplers[i];
        cuda_sample_row r;
        memset(&r, 0, sizeof r);
        if (s) {
            r.p = s->p, r.state = s->state, r.hist = s->hist, r.present = s->present;
            r.token = p->ids[p->logit_rows[i]];
            r.append = s->picks > 0;
        }
        kv->h_rows[i] = r;
    }
    CK(cudaMemcpyAsync(kv->d_rows, kv->h_rows, (size_t)n * sizeof(cuda_sample_row),
                       cudaMemcpyHostToDevice, kv->ws.stream));
    return GPTC_OK;
}

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

gptc_status cuda_kv_sampler_new(gptc_model *m, void *kv_, const gptc_generate_params *p,
                                const int32_t *hist, int32_t n, int32_t max_len, void **out) {
    cuda_kv *kv = (cuda_kv *)kv_;
    cudaStream_t st = kv->ws.stream;
    size_t V = (size_t)m->cfg.n_vocab;
    *out = NULL;
    if (n < 0 || max_len < n || max_len < 1)
        return gptc_fail(GPTC_ERR_ARG, "kv_sampler_new: history of %d in room for %d", n, max_len);
    cuda_kv_sampler *s = (cuda_kv_sampler *)calloc(1, sizeof *s);
    if (!s) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    size_t a = round256(sizeof(cuda_sampler)), b = round256(sizeof(cuda_sample_state));
    size_t c = round256((size_t)max_len * sizeof(int32_t));
    cudaError_t e = cudaMalloc((void **)&s->mem, a + b + c + V);
    if (e != cudaSuccess) {
        free(s);
        return cuda_error(e, "cudaMalloc (a sequence's sampler)");
    }
    s->p = (cuda_sampler *)s->mem;
    s->state = (cuda_sample_state *)(s->mem + a);
    s->hist = (int32_t *)(s->mem + a + b);
    s->present = (uint8_t *)(s->mem + a + b + c);
    cuda_sampler h = cuda_sampler_of(p);
    cuda_sample_state z = {n, 0};
    /* From pageable memory these copies return once the source is read. */
    gptc_status st_ = GPTC_OK;
    if ((e = cudaMemcpyAsync(s->p, &h, sizeof h, cudaMemcpyHostToDevice, st)) != cudaSuccess ||
        (e = cudaMemcpyAsync(s->state, &z, sizeof z, cudaMemcpyHostToDevice, st)) != cudaSuccess ||
        (e = cudaMemsetAsync(s->present, 0, V, st)) != cudaSuccess ||
        (n && (e = cudaMemcpyAsync(s->hist, hist, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   st)) != cudaSuccess) ||
        (e = cuda_mark_present(s->present, s->hist, 0, n, st)) != cudaSuccess)
        st_ = cuda_error(e, "a sequence's sampler");
    if (st_ != GPTC_OK) {
        cuda_kv_sampler_free(m, kv, s);
        return st_;
    }
    *out = s;
    return GPTC_OK;
}

void cuda_kv_sampler_free(gptc_model *m, void *kv_, void *sampler) {
    (void)m;
    cuda_kv *kv = (cuda_kv *)kv_;
    cuda_kv_sampler *s = (cuda_kv_sampler *)sampler;
    if (!s) return;
    /* No pass uses it now (passes synchronise before they return), but
     * kv_sampler_new's copies may still be queued. */
    if (kv && kv->ws.stream) cudaStreamSynchronize(kv->ws.stream);
    cudaFree(s->mem);
    (void)cudaGetLastError();
    free(s);
}

/* Whether pass p's successor may be launched ahead: the caller expects to
 * ask for it; greedy on the device, a token a sequence, each row its own
 * logit row; every next position's block in the staged tables - p's own
 * staging (fresh), else that of the pass in flight, which p is. */
static int spec_eligible(const cuda_kv *kv, const gptc_model *m, const gptc_pass *p, int fresh) {
    if (!kv->spec || !p->continues || !kv->d_next || p->n_logits != p->n_tokens || p->n_tokens < kv->spec_min)
        return 0;
    int32_t bs = kv->block_size;
    for (int32_t t = 0; t < p->n_tokens; t++) {
        int32_t q = p->pos[t] + 1;
        if (!greedy_row(p, t) || q >= m->cfg.n_ctx) return 0;
        if (q / bs >= (fresh ? staged_blocks(p, p->seq[t], p->pos[t], bs, m->cfg.n_ctx) : kv->spec_nst[t])) return 0;
    }
    return 1;
}

/* The pass in flight done with: its rows out of the block map. */
static void spec_forget(cuda_kv *kv) {
    for (int32_t t = 0; t < kv->spec_T; t++)
        kv->spec_row_of[kv->spec_blk[t]] = -1;
    kv->spec_live = 0;
}

/* How p stands to the pass in flight: 2 - it is that pass; 1 - its rows are
 * some of that pass's rows, in any order (sequences that finished left),
 * the row of each in spec_take; 0 - neither. A row is known by the block
 * its position is written to, which no other sequence writes. */
static int spec_matches(cuda_kv *kv, const gptc_pass *p) {
    int32_t bs = kv->block_size;
    if (p->n_tokens > kv->spec_T || p->n_logits != p->n_tokens || p->fast_decode != kv->graph_fast)
        return 0;
    int same = p->n_tokens == kv->spec_T;
    for (int32_t t = 0; t < p->n_tokens; t++) {
        int32_t q = p->pos[t], s = p->seq[t];
        if (!greedy_row(p, t) || q < 1 || s < 0) return 0;
        const int32_t *tb = p->tables[s];
        int32_t b = tb[q / bs];
        if (b < 0 || b >= kv->n_blocks) return 0;
        int32_t j = kv->spec_row_of[b];
        if (j < 0 || kv->spec_pos[j] != q || kv->spec_ids[j] != p->ids[t]) return 0;
        const int32_t *was = kv->spec_tab + kv->spec_tab_at[j];
        for (int32_t k = 0; k <= q / bs; k++)
            if (tb[k] != was[k]) return 0;
        kv->spec_row_of[b] = -1; /* a row is taken once */
        kv->spec_take[t] = j;
        same &= j == t && s == kv->spec_seq[j];
    }
    return same ? 2 : 1;
}

/* After pass p (launched, its picks to come in buffer `par`): its successor
 * launched on them, into the other buffer. The caller fills spec_ids with
 * p's picks once it has them. */
static gptc_status speculate(cuda_kv *kv, const gptc_model *m, const gptc_pass *p, int32_t key0, int par,
                             int fresh) {
    int32_t T = p->n_tokens, bs = kv->block_size;
    int np = par ^ 1;
    int32_t key = key0 * 3 + 1 + np; /* picks into buffer np, advanced from buffer par */
    if (key >= kv->cap_graphs || !kv->graphs[key] || !spec_eligible(kv, m, p, fresh)) return GPTC_OK;
    if (fresh) {
        /* A copy of the tables as staged: what the passes launched ahead
         * read, and what a pass asked for must match. */
        size_t n_tab = 0;
        for (int32_t t = 0; t < T; t++)
            n_tab += (size_t)staged_blocks(p, p->seq[t], p->pos[t], bs, m->cfg.n_ctx);
        if (T > kv->cap_spec) {
            int32_t *q = (int32_t *)realloc(kv->spec_seq, 7 * (size_t)T * sizeof(int32_t));
            if (!q) return GPTC_OK; /* nothing launched ahead, no harm */
            kv->spec_seq = q, kv->cap_spec = T;
        }
        if (n_tab > (size_t)kv->cap_spec_tab) {
            int32_t *q = n_tab > INT32_MAX ? NULL : (int32_t *)realloc(kv->spec_tab, n_tab * sizeof(int32_t));
            if (!q) return GPTC_OK;
            kv->spec_tab = q, kv->cap_spec_tab = (int32_t)n_tab;
        }
        int32_t *a = kv->spec_seq;
        kv->spec_pos = a + T, kv->spec_ids = a + 2 * (size_t)T, kv->spec_tab_at = a + 3 * (size_t)T;
        kv->spec_blk = a + 4 * (size_t)T, kv->spec_take = a + 5 * (size_t)T, kv->spec_nst = a + 6 * (size_t)T;
        size_t at = 0;
        for (int32_t t = 0; t < T; t++) {
            int32_t nb = staged_blocks(p, p->seq[t], p->pos[t], bs, m->cfg.n_ctx);
            kv->spec_seq[t] = p->seq[t];
            kv->spec_nst[t] = nb;
            kv->spec_tab_at[t] = (int32_t)at;
            memcpy(kv->spec_tab + at, p->tables[p->seq[t]], (size_t)nb * sizeof(int32_t));
            at += (size_t)nb;
        }
    }
    /* else p is the pass in flight, row for row: the same staging */
    for (int32_t t = 0; t < T; t++) {
        int32_t q = p->pos[t] + 1, b = kv->spec_tab[kv->spec_tab_at[t] + q / bs];
        kv->spec_pos[t] = q;
        kv->spec_blk[t] = b;
        kv->spec_row_of[b] = t;
    }
    kv->spec_T = T, kv->spec_key = key0, kv->par = np, kv->spec_live = 1;
    cudaError_t e = cudaGraphLaunch(kv->graphs[key], kv->ws.stream);
    if (e == cudaSuccess) e = cudaEventRecord(kv->spec_ev[np], kv->ws.stream);
    if (e != cudaSuccess) {
        spec_forget(kv);
        return cuda_error(e, "a pass launched ahead");
    }
    kv->spec_n[0]++;
    return GPTC_OK;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

gptc_status cuda_kv_eval(gptc_model *m, void *kv_, const gptc_pass *p, float *logits) {
    cuda_kv *kv = (cuda_kv *)kv_;
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    cuda_session *w = &kv->ws;
    cudaStream_t st = w->stream;
    int C = c->n_embd, V = c->n_vocab, NH = c->n_head, D = C / NH;
    if (p->n_tokens <= 0) return GPTC_OK;
    double t0 = kv->prof ? now_ms() : 0;
    for (int32_t i = 0; i < p->n_logits; i++)
        if (p->logit_rows[i] < 0 || p->logit_rows[i] >= p->n_tokens)
            return gptc_fail(GPTC_ERR_RANGE, "kv_eval: logit row %d is %d, outside [0, %d)", i,
                             p->logit_rows[i], p->n_tokens);
    if (kv->spec_live) {
        int par = kv->par, how = spec_matches(kv, p);
        spec_forget(kv);
        if (how) {
            /* The pass in flight is this one (its successor launched behind
             * it first), or holds all of its rows. */
            kv->spec_n[how == 2 ? 1 : 2]++;
            if (how == 2) CKST(speculate(kv, m, p, kv->spec_key, par, 0));
            CK(cudaEventSynchronize(kv->spec_ev[par]));
            const volatile int32_t *pk = kv->h_next + (size_t)par * kv->cap_next;
            for (int32_t i = 0; i < p->n_logits; i++)
                p->next[i] = pk[how == 2 ? i : kv->spec_take[i]];
            for (int32_t t = 0; kv->spec_live && t < p->n_tokens; t++)
                kv->spec_ids[t] = p->next[t];
            /* a pass of this many rows again may be launched ahead at once */
            kv->last_key = how == 2 ? kv->spec_key : -1;
            return GPTC_OK;
        }
        kv->spec_n[3]++;
        CK(cudaStreamSynchronize(st));
    }
    pass_layout lay;
    memset(&lay, 0, sizeof lay);
    CKST(stage_pass(kv, m, p, &lay));

    /* A decode pass - a token of each sequence, each with its logits - is
     * replayed from a graph captured for its token count. Its split kernel
     * spans n_ctx (blocks past a query's position exit at once), so the
     * graph holds for any positions. */
    int short_split = cuda_attention_kind(cm->dt, 1, C, NH) == CUDA_ATT_SPLIT;
    size_t per_chunk = LOGITS_CHUNK_BYTES / ((size_t)V * sizeof(float));
    int decode = lay.n_segs == p->n_tokens && p->n_logits == p->n_tokens;
    int graph = short_split && decode && (size_t)p->n_logits <= per_chunk && !kv->no_graph &&
                kv->prof != 2 && !env_flag("GPTC_CUDA_NO_PASS_GRAPH");
    int split_len = graph ? c->n_ctx : lay.max_pos_short + 1;
    /* Split attention's scratch: the short tokens in one launch, each other
     * split segment in its own, one after another on the stream. */
    size_t scratch = short_split ? cuda_attention_split_floats(NH, D, lay.n_short, split_len) : 0;
    int32_t tickets = short_split ? NH * lay.n_short : 0;
    for (int32_t s = 0; s < lay.n_segs; s++) {
        const segment *g = &kv->segs[s];
        if (g->kind != CUDA_ATT_SPLIT || (short_split && g->n < LT_MIN_TOKENS)) continue;
        size_t f = cuda_attention_split_floats(NH, D, g->n, p->pos[g->first + g->n - 1] + 1);
        if (f > scratch) scratch = f;
        if (NH * g->n > tickets) tickets = NH * g->n;
    }
    CKST(reserve(kv, m, lay.rows, p->n_logits, scratch, tickets));
    int sampled = 0;
    for (int32_t i = 0; p->samplers && i < p->n_logits; i++)
        sampled |= p->samplers[i] != NULL;
    if (sampled) CKST(stage_samplers(kv, p));

    kv->n_marks = 0;
    if (graph && kv->graph_fast != p->fast_decode) {
        drop_graphs(kv);
        kv->graph_fast = p->fast_decode;
    }
    /* Without a graph the same launches run uncaptured: same results. */
    /* Three graphs a key: this pass (picks into buffer 0), and its
     * successor launched ahead into buffer 1 or 0, advanced from the other -
     * those two only once a pass of this key runs again (a batch of
     * sequences leaving one a step would capture them for nothing). */
    int32_t key0 = 2 * lay.rows + sampled, key = 3 * key0;
    if (graph && (key >= kv->cap_graphs || !kv->graphs[key]) &&
        capture(kv, m, p, &lay, key, sampled) != GPTC_OK)
        graph = 0, kv->no_graph = 1;
    int ahead = graph && !sampled && kv->last_key == key0 && spec_eligible(kv, m, p, 1);
    kv->last_key = key0;
    for (int b = 0; b < 2 && ahead; b++) {
        if (key + 1 + b < kv->cap_graphs && kv->graphs[key + 1 + b]) continue;
        pass_layout lb = lay;
        lb.next = kv->d_next + (size_t)b * kv->cap_next;
        if (capture(kv, m, p, &lb, key + 1 + b, sampled, kv->d_next + (size_t)(b ^ 1) * kv->cap_next) != GPTC_OK)
            graph = 0, kv->no_graph = 1, ahead = 0;
    }
    if (kv->prof) CK(cudaEventRecord(kv->ev[0], st));
    if (graph) {
        CK(cudaGraphLaunch(kv->graphs[key], st));
        if (kv->prof) CK(cudaEventRecord(kv->ev[1], st));
        CKST(copy_rows(kv, p, &lay, logits, 0, p->n_logits, (size_t)V));
    } else {
        CKST(enqueue_blocks(kv, m, p, &lay, short_split, split_len));
        /* The logits in chunks of the device buffer. */
        for (int32_t r = 0; r < p->n_logits; r += kv->cap_logits) {
            int32_t nr = p->n_logits - r < kv->cap_logits ? p->n_logits - r : kv->cap_logits;
            CKST(enqueue_head(kv, m, p, &lay, p->n_logits, r, nr, p->argmax_only != NULL, sampled));
            if (kv->prof && r == 0) CK(cudaEventRecord(kv->ev[1], st));
            CKST(copy_rows(kv, p, &lay, logits, r, nr, (size_t)V));
        }
        if (kv->prof && !p->n_logits) CK(cudaEventRecord(kv->ev[1], st));
    }
    if (kv->prof) CK(cudaEventRecord(kv->ev[2], st));
    if (ahead) {
        CK(cudaEventRecord(kv->spec_ev[0], st));
        CKST(speculate(kv, m, p, key0, 0, 1));
    }
    /* The staging is reused by the next pass: wait for this one. */
    if (kv->spec_live) CK(cudaEventSynchronize(kv->spec_ev[0]));
    else CK(cudaStreamSynchronize(st));
    const volatile int32_t *picks = kv->d_next ? kv->h_next : kv->h_int + lay.next_at;
    for (int32_t i = 0; i < p->n_logits; i++)
        if (picked_on_device(p, i)) p->next[i] = picks[i];
    for (int32_t t = 0; kv->spec_live && t < p->n_tokens; t++)
        kv->spec_ids[t] = p->next[t];
    for (int32_t i = 0; sampled && i < p->n_logits; i++)
        if (p->samplers[i]) ((cuda_kv_sampler *)p->samplers[i])->picks++;
    if (kv->prof && decode && ++kv->prof_skip > 2) {
        float a = 0, b = 0;
        cudaEventElapsedTime(&a, kv->ev[0], kv->ev[1]);
        cudaEventElapsedTime(&b, kv->ev[1], kv->ev[2]);
        kv->prof_ms[0] += a;
        kv->prof_ms[1] += b;
        kv->prof_ms[2] += now_ms() - t0;
        kv->prof_n++;
        for (int i = 1; i < kv->n_marks; i++) {
            float ms = 0;
            cudaEventElapsedTime(&ms, kv->mev[i - 1], kv->mev[i]);
            kv->phase_ms[kv->mphase[i]] += ms;
        }
    }
    return GPTC_OK;
}
