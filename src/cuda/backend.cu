/*
 * backend.cu - the CUDA backend: weights on the device, sessions, the
 * forward pass and the decode step replayed from a CUDA graph.
 *
 * Weights are uploaded once in the requested dtype (fp16 by default, bf16 or
 * fp32), keeping the [out][in] layout with each row padded to 8 elements so
 * that every row starts 16-byte aligned for 128-bit loads (the padding is
 * zero). Layer norm parameters, biases and wpe stay fp32. Every product
 * accumulates in fp32 and the residual stream is fp32; the activations that
 * feed a product, and the K/V cache, are stored in the weight dtype.
 *
 * A pass over T tokens (eval) runs each linear layer through cuBLASLt when T
 * is large enough to be compute bound, else through the fused GEMV kernels.
 * The decode step (eval_greedy) is T = 1 end to end on the device - embed,
 * 5 kernels per layer (layer norms fused into the GEMVs), final norm, LM head,
 * argmax - and is captured once as
 * a CUDA graph. Its kernels read the token and position from device memory
 * (d_tok, d_pos) and the argmax writes the next token into d_tok and
 * advances d_pos, so the graph is replayed unchanged every step; the host
 * writes d_tok / d_pos only when they differ from what the device holds
 * (a different token fed back, eval or a reset in between). Per step only
 * the 4-byte token id crosses to the host.
 *
 * The batch engine's paged K/V cache (kv_new ... kv_eval) is paged.cu's.
 *
 * Errors: every CUDA, cuBLASLt call and launch is checked; failures become a
 * gptc status with a one-line message, never an exit.
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.cuh"

gptc_status cuda_error(cudaError_t e, const char *what) {
    (void)cudaGetLastError(); /* clear it, so the next call does not see it */
    if (e == cudaErrorMemoryAllocation)
        return gptc_fail(GPTC_ERR_NOMEM,
                         "cuda: out of GPU memory (%s); use a smaller model or --backend cpu", what);
    return gptc_fail(GPTC_ERR_UNSUPPORTED, "cuda: %s failed: %s (%s)", what, cudaGetErrorName(e),
                     cudaGetErrorString(e));
}

static size_t dtype_size(gptc_dtype dt) { return dt == GPTC_DTYPE_F32 ? 4 : 2; }

extern "C" int gptc_cuda_available(void) {
    int n = 0, dev = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1 || cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return p.major >= 8;
}

/*
 * cuBLASLt's algorithm per product shape. The heuristic query costs the host
 * ~10-20 us a product: a batch's prompts, each its own chain of products,
 * were enqueued no faster than the GPU ran them (gpt2-xl, 32 prompts of
 * 128 tokens: ~2.4 ms of host time per prompt). The query's answer depends
 * only on what the key holds (no pointer but the bias's, whose alignment is
 * always 256), so a cached algorithm is the one the query would return:
 * the same kernel, the same sums.
 */
#define LT_ALGOS 512
typedef struct {
    int T, I, O, ldw, ldo, ot, ep, bias, beta1, found;
    cublasLtMatmulAlgo_t algo;
    /* the descriptors too: creating and destroying five per product was
     * most of the rest of its host time. The bias pointer is set per call,
     * under the cache's lock, as the product is enqueued. */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    unsigned long used; /* the cache's clock at its last use */
} lt_algo;
/* Every prompt length is a shape of its own (4 products a length), so a
 * server or `bench --kv-cache off` fills the cache: the least recently used
 * entry then makes room. When a full cache took nothing more, every product
 * of every later prompt asked the heuristic again (and checked its answers
 * for a whole-K one): H100, gpt2 with the K/V cache off, mean ms a step over
 * 256 steps 7.0 -> 1.9 with the eviction, over 1008 8.5 -> 2.2. */
struct lt_algo_cache {
    pthread_mutex_t mu;
    int n, cap; /* entries, room (LT_ALGOS) */
    unsigned long clock;
    lt_algo a[LT_ALGOS];
};

static void lt_entry_free(lt_algo *a) {
    if (a->op) cublasLtMatmulDescDestroy(a->op);
    if (a->la) cublasLtMatrixLayoutDestroy(a->la);
    if (a->lb) cublasLtMatrixLayoutDestroy(a->lb);
    if (a->lc) cublasLtMatrixLayoutDestroy(a->lc);
    a->op = NULL, a->la = a->lb = a->lc = NULL;
}

static int lt_key_eq(const lt_algo *a, const lt_algo *k) {
    return a->T == k->T && a->I == k->I && a->O == k->O && a->ldw == k->ldw && a->ldo == k->ldo &&
           a->ot == k->ot && a->ep == k->ep && a->bias == k->bias && a->beta1 == k->beta1;
}

/* Takes the entry's descriptors (k's are then NULL) unless another thread
 * stored the key first. A full cache frees its least recently used entry's
 * (every use of an entry is under the lock, so none is in use). */
static void lt_store(const cuda_model *cm, lt_algo *k) {
    struct lt_algo_cache *c = cm->lt_algos;
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    int have = 0;
    for (int i = 0; i < c->n && !have; i++)
        have = lt_key_eq(&c->a[i], k);
    if (!have) {
        int at = c->n;
        if (at < c->cap) {
            c->n++;
        } else {
            at = 0;
            for (int i = 1; i < c->n; i++)
                if (c->a[i].used < c->a[at].used) at = i;
            lt_entry_free(&c->a[at]);
        }
        k->used = ++c->clock;
        c->a[at] = *k;
        k->op = NULL, k->la = k->lb = k->lc = NULL;
    }
    pthread_mutex_unlock(&c->mu);
}

static void lt_cache_free(struct lt_algo_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) lt_entry_free(&c->a[i]);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- weights ---- */

static void cuda_model_free(gptc_model *m) {
    cuda_model *cm = (cuda_model *)m->backend_state;
    if (!cm) return;
    lt_cache_free(cm->lt_algos); /* before the handle */
    if (cm->lt) cublasLtDestroy(cm->lt);
    cudaFree(cm->arena);
    free(cm->layers);
    free(cm);
    m->backend_state = NULL;
}

/* Copies rows x I fp32 host values to a (rows, ld) device matrix of dtype dt
 * whose padding is already zero; staging is a zeroed device buffer of
 * staging_n floats (>= ld) for the conversion. */
static gptc_status upload_matrix(const cuda_model *cm, void *dst, const float *src, size_t rows,
                                 int I, int ld, float *staging, size_t staging_n) {
    if (cm->dt == GPTC_DTYPE_F32) {
        CK(cudaMemcpy2D(dst, (size_t)ld * 4, src, (size_t)I * 4, (size_t)I * 4, rows,
                        cudaMemcpyHostToDevice));
        return GPTC_OK;
    }
    size_t per = staging_n / (size_t)ld;
    for (size_t r = 0; r < rows; r += per) {
        size_t n = rows - r < per ? rows - r : per;
        /* Only the first I columns of each staging row are written: the
         * padding stays zero. */
        CK(cudaMemcpy2D(staging, (size_t)ld * 4, src + r * I, (size_t)I * 4, (size_t)I * 4, n,
                        cudaMemcpyHostToDevice));
        CK(cuda_convert(cm->dt, (char *)dst + r * ld * cm->es, staging, n * ld, 0));
        CK(cudaStreamSynchronize(0));
    }
    return GPTC_OK;
}

static gptc_status upload_vec(float *dst, const float *src, size_t n) {
    CK(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice));
    return GPTC_OK;
}

/* Lays the device arena out (offsets 256-byte aligned) when base is NULL,
 * returning its size; sets the pointers when base is given. */
static size_t layout(cuda_model *cm, const gptc_model *m, char *base) {
    const gptc_config *c = &m->cfg;
    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, V = (size_t)c->n_vocab;
    size_t P = (size_t)c->n_ctx, es = cm->es, Cp = (size_t)cm->Cp, Fp = (size_t)cm->Fp;
    size_t off = 0;
#define PLACE(ptr, type, bytes)                                                                    \
    do {                                                                                           \
        if (base) ptr = (type)(base + off);                                                        \
        off += ((bytes) + 255) & ~(size_t)255;                                                     \
    } while (0)
    PLACE(cm->wte, void *, V * Cp * es);
    if (m->tied) {
        if (base) cm->lm_head = cm->wte;
    } else
        PLACE(cm->lm_head, void *, V * Cp * es);
    PLACE(cm->wpe, float *, P * C * 4);
    PLACE(cm->lnf_w, float *, C * 4);
    PLACE(cm->lnf_b, float *, C * 4);
    for (int l = 0; l < c->n_layer; l++) {
        cuda_layer *y = &cm->layers[l];
        PLACE(y->attn_w, void *, 3 * C * Cp * es);
        PLACE(y->proj_w, void *, C * Cp * es);
        PLACE(y->fc_w, void *, F * Cp * es);
        PLACE(y->mproj_w, void *, C * Fp * es);
        PLACE(y->ln1_w, float *, C * 4);
        PLACE(y->ln1_b, float *, C * 4);
        PLACE(y->attn_b, float *, 3 * C * 4);
        PLACE(y->proj_b, float *, C * 4);
        PLACE(y->ln2_w, float *, C * 4);
        PLACE(y->ln2_b, float *, C * 4);
        PLACE(y->fc_b, float *, F * 4);
        PLACE(y->fc_b16, void *, F * es);
        PLACE(y->attn_b16, void *, 3 * C * es);
        PLACE(y->mproj_b, float *, C * 4);
    }
#undef PLACE
    return off;
}

static gptc_status model_init(gptc_model *m, gptc_dtype dt, float **staging) {
    const gptc_config *c = &m->cfg;
    int n = 0, dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError();
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "cuda: no NVIDIA driver, or one older than this build's CUDA %d.%d runtime (%s); use --backend cpu",
                         CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, cudaGetErrorName(e));
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "cuda: no usable CUDA device (%s: %s); use --backend cpu",
                         cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (n < 1) return gptc_fail(GPTC_ERR_UNSUPPORTED, "cuda: no CUDA device found; use --backend cpu");
    if (m->device >= n)
        return gptc_fail(GPTC_ERR_ARG, "device: %d, but this machine has %d CUDA device%s (0 to %d)", m->device, n,
                         n == 1 ? "" : "s", n - 1);
    CK(cudaSetDevice(m->device));
    dev = m->device;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    if (prop.major < 8)
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "cuda: %s has compute capability %d.%d; gptc needs 8.0 or newer; use --backend cpu",
                         prop.name, prop.major, prop.minor);

    cuda_model *cm = (cuda_model *)calloc(1, sizeof *cm);
    if (!cm) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    m->backend_state = cm;
    cm->layers = (cuda_layer *)calloc((size_t)c->n_layer, sizeof *cm->layers);
    if (!cm->layers) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    cm->dt = dt;
    cm->es = dtype_size(dt);
    cm->Cp = cuda_pad_row(c->n_embd);
    cm->Fp = cuda_pad_row(c->n_inner);
    int max_ld = cm->Cp > cm->Fp ? cm->Cp : cm->Fp;
    if ((size_t)max_ld * sizeof(float) > prop.sharedMemPerBlockOptin ||
        (size_t)cm->Cp * (3 * sizeof(float) + 2) + 128 > prop.sharedMemPerBlockOptin)
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "cuda: n_inner %d / n_embd %d too large for the GEMV kernel's shared memory (%zu bytes); use --backend cpu",
                         c->n_inner, c->n_embd, (size_t)prop.sharedMemPerBlockOptin);
    CK(cuda_gemv_prepare(max_ld, cm->Cp));

    size_t bytes = layout(cm, m, NULL);
    e = cudaMalloc((void **)&cm->arena, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        return gptc_fail(e == cudaErrorMemoryAllocation ? GPTC_ERR_NOMEM : GPTC_ERR_UNSUPPORTED,
                         "cuda: cannot allocate %zu MB of weights on %s (%zu MB free): %s; use --backend cpu",
                         bytes >> 20, prop.name, free_b >> 20, cudaGetErrorString(e));
    }
    layout(cm, m, cm->arena);
    CK(cudaMemset(cm->arena, 0, bytes));

    size_t C = (size_t)c->n_embd, F = (size_t)c->n_inner, V = (size_t)c->n_vocab;
    size_t staging_n = (size_t)8 << 20;
    if (staging_n < (size_t)max_ld) staging_n = (size_t)max_ld;
    if (dt != GPTC_DTYPE_F32) {
        CK(cudaMalloc((void **)staging, staging_n * sizeof(float)));
        CK(cudaMemset(*staging, 0, staging_n * sizeof(float)));
    }
    int Cp = cm->Cp, Fp = cm->Fp;
    CKST(upload_matrix(cm, cm->wte, m->wte, V, (int)C, Cp, *staging, staging_n));
    if (!m->tied) CKST(upload_matrix(cm, cm->lm_head, m->lm_head, V, (int)C, Cp, *staging, staging_n));
    CKST(upload_vec(cm->wpe, m->wpe, (size_t)c->n_ctx * C));
    CKST(upload_vec(cm->lnf_w, m->lnf_w, C));
    CKST(upload_vec(cm->lnf_b, m->lnf_b, C));
    for (int l = 0; l < c->n_layer; l++) {
        const gptc_layer *h = &m->layers[l];
        cuda_layer *y = &cm->layers[l];
        CKST(upload_matrix(cm, y->attn_w, h->attn_w, 3 * C, (int)C, Cp, *staging, staging_n));
        CKST(upload_matrix(cm, y->proj_w, h->proj_w, C, (int)C, Cp, *staging, staging_n));
        CKST(upload_matrix(cm, y->fc_w, h->fc_w, F, (int)C, Cp, *staging, staging_n));
        CKST(upload_matrix(cm, y->mproj_w, h->mproj_w, C, (int)F, Fp, *staging, staging_n));
        CKST(upload_vec(y->ln1_w, h->ln1_w, C));
        CKST(upload_vec(y->ln1_b, h->ln1_b, C));
        CKST(upload_vec(y->attn_b, h->attn_b, 3 * C));
        CKST(upload_vec(y->proj_b, h->proj_b, C));
        CKST(upload_vec(y->ln2_w, h->ln2_w, C));
        CKST(upload_vec(y->ln2_b, h->ln2_b, C));
        CKST(upload_vec(y->fc_b, h->fc_b, F));
        CKST(upload_matrix(cm, y->fc_b16, h->fc_b, 1, (int)F, (int)F, *staging, staging_n));
        CKST(upload_matrix(cm, y->attn_b16, h->attn_b, 1, (int)(3 * C), (int)(3 * C), *staging, staging_n));
        CKST(upload_vec(y->mproj_b, h->mproj_b, C));
    }
    CKLT(cublasLtCreate(&cm->lt));
    cm->lt_algos = (struct lt_algo_cache *)calloc(1, sizeof *cm->lt_algos);
    if (!cm->lt_algos) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&cm->lt_algos->mu, NULL);
    /* GPTC_CUDA_LT_CACHE=N: room for N shapes (tests/gpu/batch_check.sh
     * runs test_batch with 3, so that entries are evicted all the time) */
    const char *cap = getenv("GPTC_CUDA_LT_CACHE");
    cm->lt_algos->cap = cap && atoi(cap) > 0 && atoi(cap) < LT_ALGOS ? atoi(cap) : LT_ALGOS;
    CK(cudaDeviceSynchronize());
    return GPTC_OK;
}

static gptc_status cuda_model_init(gptc_model *m, gptc_dtype dtype) {
    float *staging = NULL;
    gptc_status st = model_init(m, dtype, &staging);
    cudaFree(staging);
    if (st != GPTC_OK) cuda_model_free(m);
    return st;
}

/* ---- sessions ---- */

static void cuda_session_free(gptc_session *s) {
    cuda_session *cs = (cuda_session *)s->impl;
    if (!cs) return;
    if (cs->stream) cudaStreamSynchronize(cs->stream);
    if (cs->exec) cudaGraphExecDestroy(cs->exec);
    if (cs->graph) cudaGraphDestroy(cs->graph);
    if (cs->exec_s) cudaGraphExecDestroy(cs->exec_s);
    if (cs->graph_s) cudaGraphDestroy(cs->graph_s);
    void *bufs[] = {cs->k_cache, cs->v_cache, cs->x,     cs->qkv,   cs->qkv16, cs->tmp,
                    cs->xn,      cs->att,     cs->fc,    cs->logits, cs->d_ids,
                    cs->d_pos,   cs->am_v,    cs->am_i,  cs->lt_ws, cs->att_scratch,
                    cs->att_tickets, cs->d_samp, cs->d_sstate, cs->d_hist, cs->d_present,
                    cs->d_samp_scr, cs->d_layers, cs->dec_part, cs->dec_sync, cs->am_ticket};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) cudaFree(bufs[i]);
    cudaFreeHost(cs->h_next);
    cudaFreeHost(cs->h_ring);
    for (int i = 0; i < SPEC_DEPTH; i++)
        if (cs->spec_ev[i]) cudaEventDestroy(cs->spec_ev[i]);
    if (cs->stream) cudaStreamDestroy(cs->stream);
    (void)cudaGetLastError();
    free(cs);
    s->impl = NULL;
}

/* The persistent decode kernel's arguments for this session. */
static gptc_status mega_init(const gptc_session *s, cuda_session *cs, int blocks) {
    const gptc_model *m = s->model;
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    int L = c->n_layer, C = c->n_embd, D = C / c->n_head;
    size_t layer_kv = (size_t)s->max_len * C * cm->es;
    cuda_decode_layer *h = (cuda_decode_layer *)calloc((size_t)L, sizeof *h);
    if (!h) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    for (int l = 0; l < L; l++) {
        const cuda_layer *y = &cm->layers[l];
        h[l].attn_w = y->attn_w, h[l].proj_w = y->proj_w, h[l].fc_w = y->fc_w, h[l].mproj_w = y->mproj_w;
        h[l].ln1_w = y->ln1_w, h[l].ln1_b = y->ln1_b, h[l].attn_b = y->attn_b, h[l].proj_b = y->proj_b;
        h[l].ln2_w = y->ln2_w, h[l].ln2_b = y->ln2_b, h[l].fc_b = y->fc_b, h[l].mproj_b = y->mproj_b;
        h[l].k_cache = (char *)cs->k_cache + l * layer_kv;
        h[l].v_cache = (char *)cs->v_cache + l * layer_kv;
        h[l].scale = gptc_attn_scale(c, l);
    }
    cudaError_t e = cudaMalloc((void **)&cs->d_layers, (size_t)L * sizeof *h);
    if (e == cudaSuccess)
        e = cudaMemcpy(cs->d_layers, h, (size_t)L * sizeof *h, cudaMemcpyHostToDevice);
    free(h);
    if (e != cudaSuccess) return cuda_error(e, "cudaMalloc/cudaMemcpy (decode layers)");
    CK(cudaMalloc((void **)&cs->dec_part,
                  cuda_decode_part_floats(c->n_head, D, s->max_len) * sizeof(float)));
    CK(cudaMalloc((void **)&cs->dec_sync, CUDA_DECODE_SYNC_WORDS * sizeof(unsigned)));
    CK(cudaMemsetAsync(cs->dec_sync, 0, CUDA_DECODE_SYNC_WORDS * sizeof(unsigned), cs->stream));
    cuda_decode_args *a = &cs->dargs;
    memset(a, 0, sizeof *a);
    a->n_layer = L, a->C = C, a->NH = c->n_head, a->F = c->n_inner, a->V = c->n_vocab;
    a->Cp = cm->Cp, a->Fp = cm->Fp, a->blocks = blocks;
    a->eps = c->layer_norm_epsilon;
    a->act = m->act;
    a->wte = cm->wte, a->lm_head = cm->lm_head, a->wpe = cm->wpe;
    a->lnf_w = cm->lnf_w, a->lnf_b = cm->lnf_b;
    a->layers = cs->d_layers;
    a->x = cs->x, a->qkv = cs->qkv, a->part = cs->dec_part, a->h = cs->fc, a->logits = cs->logits;
    a->tok = cs->d_tok, a->pos = cs->d_pos;
    a->sync = cs->dec_sync;
    a->am_v = cs->am_v, a->am_i = cs->am_i;
    return GPTC_OK;
}

static gptc_status session_init(gptc_session *s, cuda_session *cs) {
    const gptc_model *m = s->model;
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    size_t N = (size_t)s->max_len, C = (size_t)c->n_embd, F = (size_t)c->n_inner;
    size_t V = (size_t)c->n_vocab, es = cm->es, wide = 3 * C > F ? 3 * C : F;
    int D = c->n_embd / c->n_head;

    cudaDeviceProp prop;
    int dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    if (cuda_attention_smem(D, s->max_len) > prop.sharedMemPerBlockOptin)
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "cuda: session length %d needs more shared memory for attention than the device has; use --backend cpu",
                         s->max_len);
    CK(cuda_attention_prepare(D, s->max_len));

    CK(cudaStreamCreateWithFlags(&cs->stream, cudaStreamNonBlocking));
    size_t kv = (size_t)c->n_layer * N * C * es;
    CK(cudaMalloc(&cs->k_cache, kv));
    CK(cudaMalloc(&cs->v_cache, kv));
    CK(cudaMalloc((void **)&cs->x, N * C * sizeof(float)));
    CK(cudaMalloc((void **)&cs->qkv, N * 3 * C * sizeof(float)));
    if (cm->dt != GPTC_DTYPE_F32) CK(cudaMalloc(&cs->qkv16, N * 3 * C * es)); /* fresh_qkv's */
    CK(cudaMalloc((void **)&cs->tmp, N * wide * sizeof(float)));
    CK(cudaMalloc(&cs->xn, N * C * es));
    CK(cudaMalloc(&cs->att, N * C * es));
    CK(cudaMalloc(&cs->fc, N * F * es));
    size_t rows = LOGITS_CHUNK_BYTES / (V * sizeof(float));
    cs->logit_rows = (int)(rows < 1 ? 1 : rows > N ? N : rows);
    CK(cudaMalloc((void **)&cs->logits, (size_t)cs->logit_rows * V * sizeof(float)));
    CK(cudaMalloc((void **)&cs->d_ids, N * sizeof(int32_t)));
    CK(cudaMalloc((void **)&cs->d_pos, 2 * sizeof(int32_t)));
    cs->d_tok = cs->d_pos + 1;
    /* The pick's partials: a pair for each block of the argmax kernel, the
     * persistent kernel or the LM head's product (at most a block a 4 rows,
     * cuda_fuse). */
    int blocks = cuda_decode_blocks();
    size_t parts = blocks > CUDA_ARGMAX_PARTS ? (size_t)blocks : CUDA_ARGMAX_PARTS;
    if ((V + 3) / 4 > parts) parts = (V + 3) / 4;
    CK(cudaMalloc((void **)&cs->am_v, parts * sizeof(float)));
    CK(cudaMalloc((void **)&cs->am_i, parts * sizeof(int32_t)));
    CK(cudaMalloc((void **)&cs->am_ticket, sizeof(int)));
    CK(cudaMemsetAsync(cs->am_ticket, 0, sizeof(int), cs->stream));
    CK(cudaMallocHost((void **)&cs->h_next, (1 + SPEC_DEPTH) * sizeof(int32_t)));
    if (!getenv("GPTC_CUDA_TOKEN_COPY") &&
        cudaHostAlloc((void **)&cs->h_ring, TOKEN_RING * sizeof(int32_t), cudaHostAllocMapped) == cudaSuccess &&
        cudaHostGetDevicePointer((void **)&cs->d_ring, cs->h_ring, 0) != cudaSuccess)
        cs->d_ring = NULL; /* a device that cannot map it: the copy */
    (void)cudaGetLastError();
    for (int i = 0; i < SPEC_DEPTH; i++) CK(cudaEventCreateWithFlags(&cs->spec_ev[i], cudaEventDisableTiming));
    CK(cudaMalloc(&cs->lt_ws, LT_WORKSPACE_BYTES));
    CK(cudaMalloc((void **)&cs->d_samp, sizeof(cuda_sampler)));
    CK(cudaMalloc((void **)&cs->d_sstate, sizeof(cuda_sample_state)));
    CK(cudaMalloc((void **)&cs->d_hist, N * sizeof(int32_t)));
    CK(cudaMalloc((void **)&cs->d_present, V));
    /* GPTC_SAMPLE_MB=0: the one-block sampler for every step (an A/B switch). */
    size_t scr = cuda_sample_scratch_bytes(V);
    if (scr && !(getenv("GPTC_SAMPLE_MB") && atoi(getenv("GPTC_SAMPLE_MB")) == 0)) {
        CK(cudaMalloc(&cs->d_samp_scr, scr));
        CK(cudaMemsetAsync(cs->d_samp_scr, 0, scr, cs->stream));
    }
    CK(cudaMalloc((void **)&cs->att_scratch,
                  cuda_attention_scratch_floats(c->n_head, D, s->max_len) * sizeof(float)));
    CK(cudaMalloc((void **)&cs->att_tickets, (size_t)c->n_head * ATT_SPLIT_MAXT * sizeof(int)));
    CK(cudaMemsetAsync(cs->att_tickets, 0, (size_t)c->n_head * ATT_SPLIT_MAXT * sizeof(int),
                       cs->stream));
    /* Unwritten cache rows are never read (attention stops at the query's
     * position), but zeros make a stray read harmless rather than NaN. */
    CK(cudaMemsetAsync(cs->k_cache, 0, kv, cs->stream));
    CK(cudaMemsetAsync(cs->v_cache, 0, kv, cs->stream));
    CK(cudaMemsetAsync(cs->d_pos, 0, 2 * sizeof(int32_t), cs->stream));
    cs->mega = blocks > 0 && blocks <= 1024 && cuda_decode_supported(c->n_embd, c->n_head, s->max_len) &&
               getenv("GPTC_CUDA_MEGA") && atoi(getenv("GPTC_CUDA_MEGA")) == 1;
    if (cs->mega) CKST(mega_init(s, cs, blocks));
    CK(cudaStreamSynchronize(cs->stream));
    cs->dev_pos = 0;
    cs->dev_tok = -1;
    return GPTC_OK;
}

static gptc_status cuda_session_init(gptc_session *s) {
    cuda_session *cs = (cuda_session *)calloc(1, sizeof *cs);
    if (!cs) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    s->impl = cs;
    gptc_status st = session_init(s, cs);
    if (st != GPTC_OK) cuda_session_free(s);
    return st;
}

/* Beam search: dst continues from src's sequence. The caches are (L,
 * max_len, C) and the two max_len may differ, so each is one 2-D copy of L
 * rows of len positions. The d_pos / d_tok / sampler history that dst's
 * graphs rely on no longer describe it: marked unknown, they are rewritten
 * before the next step that needs them. */
static gptc_status cuda_session_copy(gptc_session *dst, const gptc_session *src) {
    cuda_session *d = (cuda_session *)dst->impl;
    const cuda_session *s = (const cuda_session *)src->impl;
    const gptc_config *c = &dst->model->cfg;
    const cuda_model *cm = (const cuda_model *)dst->model->backend_state;
    size_t row = (size_t)c->n_embd * cm->es;
    d->hist_ok = 0;
    d->dev_pos = d->dev_tok = -1;
    d->spec_n = 0;
    if (src->len == 0) return GPTC_OK;
    CK(cudaStreamSynchronize(s->stream));
    CK(cudaMemcpy2DAsync(d->k_cache, (size_t)dst->max_len * row, s->k_cache,
                         (size_t)src->max_len * row, (size_t)src->len * row, (size_t)c->n_layer,
                         cudaMemcpyDeviceToDevice, d->stream));
    CK(cudaMemcpy2DAsync(d->v_cache, (size_t)dst->max_len * row, s->v_cache,
                         (size_t)src->max_len * row, (size_t)src->len * row, (size_t)c->n_layer,
                         cudaMemcpyDeviceToDevice, d->stream));
    CK(cudaStreamSynchronize(d->stream));
    return GPTC_OK;
}

/* ---- the forward pass ---- */

static void prof_mark(cuda_session *cs, const char *name) {
    if (!cs->prof_on || cs->prof_n >= 1024) return;
    if (cudaEventCreate(&cs->prof_ev[cs->prof_n]) != cudaSuccess) return;
    cudaEventRecord(cs->prof_ev[cs->prof_n], cs->stream);
    cs->prof_name[cs->prof_n++] = name;
}

/* Adds the intervals between cs's events to tot[] by the name of the event
 * that ends each (names[] / *nn the kinds seen); returns the whole span. */
static float prof_collect(cuda_session *cs, double *tot, const char **names, int *nn, int add) {
    float all = 0;
    cudaStreamSynchronize(cs->stream);
    for (int i = 1; i < cs->prof_n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, cs->prof_ev[i - 1], cs->prof_ev[i]) != cudaSuccess) continue;
        const char *nm = cs->prof_name[i];
        if (!strcmp(nm, "start") || !add) continue;
        int k = 0;
        while (k < *nn && strcmp(names[k], nm)) k++;
        if (k == *nn && *nn < 32) names[(*nn)++] = nm;
        if (k < 32) tot[k] += ms;
    }
    if (cs->prof_n > 1) cudaEventElapsedTime(&all, cs->prof_ev[0], cs->prof_ev[cs->prof_n - 1]);
    for (int i = 0; i < cs->prof_n; i++) cudaEventDestroy(cs->prof_ev[i]);
    (void)cudaGetLastError();
    return all;
}

/*
 * Products through cuBLASLt sum each output over the whole K in one pass
 * (no split-K). A batch's prompts share one product (paged.cu), and a row's
 * bits must not depend on the rows beside it: on an H100 with cuBLASLt 13.1
 * every such algorithm gave GPT-2's prefill products the same bits for a
 * row at 8 to 16,384 rows, at any place in the product, whatever its tile
 * shape, where the split-K ones the heuristic picks for a few dozen rows of
 * the long products (K = 3072, 6400) did not (bench/lt_rows.cu). Sessions
 * and batches take the rule alike.
 */
#define LT_CANDIDATES 8
static int lt_whole_k(const cublasLtMatmulAlgo_t *a) {
    uint32_t splitk = 1, red = CUBLASLT_REDUCTION_SCHEME_NONE;
    size_t w = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w) !=
        CUBLAS_STATUS_SUCCESS)
        splitk = 1;
    if (cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w) !=
        CUBLAS_STATUS_SUCCESS)
        red = CUBLASLT_REDUCTION_SCHEME_NONE;
    return splitk <= 1 && red == CUBLASLT_REDUCTION_SCHEME_NONE;
}

/* The first of the heuristic's n answers that sums over the whole K, else
 * the first that cuBLASLt accepts with its split-K turned off (for a few
 * dozen rows of a long product, K = 3072 or 6400, every answer of the top
 * 8 split K). 0: none. */
static int lt_pick_whole_k(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la,
                           cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc,
                           const cublasLtMatmulHeuristicResult_t *all, int n, cublasLtMatmulHeuristicResult_t *res) {
    for (int i = 0; i < n; i++)
        if (all[i].state == CUBLAS_STATUS_SUCCESS && lt_whole_k(&all[i].algo)) {
            *res = all[i];
            return 1;
        }
    for (int i = 0; i < n; i++) {
        if (all[i].state != CUBLAS_STATUS_SUCCESS) continue;
        cublasLtMatmulAlgo_t a = all[i].algo;
        uint32_t one = 1, none = CUBLASLT_REDUCTION_SCHEME_NONE;
        cublasLtMatmulHeuristicResult_t chk;
        memset(&chk, 0, sizeof chk);
        if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one) ==
                CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none, sizeof none) ==
                CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulAlgoCheck(lt, op, la, lb, lc, lc, &a, &chk) == CUBLAS_STATUS_SUCCESS &&
            chk.workspaceSize <= LT_WORKSPACE_BYTES && lt_whole_k(&a)) {
            *res = all[i];
            res->algo = a;
            res->workspaceSize = chk.workspaceSize;
            return 1;
        }
    }
    return 0;
}

static cudaDataType_t lt_type(gptc_dtype dt) {
    return dt == GPTC_DTYPE_F16 ? CUDA_R_16F : dt == GPTC_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

/*
 * out (T, O) fp32 = in (T, I) @ w (O, ldw)^T through cuBLASLt. cuBLASLt is
 * column-major: the row-major out (T, O) is the column-major O x T matrix
 * out^T = w^T(col-major I x O, ld ldw, transposed) . in^T (col-major I x T).
 * *done = 0 (and GPTC_OK) when no algorithm fits, so the caller falls back;
 * with `soft` also when cuBLASLt refuses the set-up (an epilogue or output
 * type this version lacks). out is (T, ldo) of type ot; with a bias, `ep`
 * (CUBLASLT_EPILOGUE_BIAS or _GELU_BIAS) applies it.
 */
static gptc_status lt_matmul_ex(const cuda_model *cm, cuda_session *cs, void *out,
                                cudaDataType_t ot, int ldo, const void *in, const void *w, int ldw,
                                int T, int I, int O, const void *bias, cublasLtEpilogue_t ep,
                                float beta, int soft, int *done) {
    *done = 0;
    float alpha = 1.0f;
    lt_algo key = {T, I, O, ldw, ldo, (int)ot, (int)ep, bias != NULL, beta != 0.0f, 0, {}, NULL, NULL, NULL, NULL, 0};
    struct lt_algo_cache *cache = cm->lt_algos;
    if (cache) {
        pthread_mutex_lock(&cache->mu);
        lt_algo *hit = NULL;
        for (int i = 0; i < cache->n && !hit; i++)
            if (lt_key_eq(&cache->a[i], &key)) hit = &cache->a[i];
        if (hit) {
            hit->used = ++cache->clock;
            cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
            int found = hit->found;
            if (found && bias)
                s = cublasLtMatmulDescSetAttribute(hit->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                   sizeof bias);
            if (found && s == CUBLAS_STATUS_SUCCESS)
                s = cublasLtMatmul(cm->lt, hit->op, &alpha, w, hit->la, in, hit->lb, &beta, out, hit->lc,
                                   out, hit->lc, &hit->algo, cs->lt_ws, LT_WORKSPACE_BYTES, cs->stream);
            pthread_mutex_unlock(&cache->mu);
            if (s != CUBLAS_STATUS_SUCCESS && soft) return GPTC_OK;
            if (s != CUBLAS_STATUS_SUCCESS)
                return gptc_fail(GPTC_ERR_UNSUPPORTED, "cuda: cuBLASLt matmul (%d x %d x %d) failed: %s",
                                 T, O, I, cublasLtGetStatusString(s));
            *done = found;
            return GPTC_OK;
        }
        pthread_mutex_unlock(&cache->mu);
    }
    cudaDataType_t ab = lt_type(cm->dt);
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res = {};
    int found = 0;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    size_t ws = LT_WORKSPACE_BYTES;
    cublasStatus_t s = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (s == CUBLAS_STATUS_SUCCESS && bias) {
        /* out (+)= product + bias[o]: bias per row of the column-major O x T
         * result, of the output's type (cuBLASLt's rule). */
        cudaDataType_t bt = ot;
        s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof bias);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                               sizeof bt);
    }
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&la, ab, (uint64_t)I, (uint64_t)O, ldw);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&lb, ab, (uint64_t)I, (uint64_t)T, I);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&lc, ot, (uint64_t)O, (uint64_t)T, (uint64_t)ldo);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatmulPreferenceCreate(&pref);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                 sizeof ws);
    int queried = 0;
    if (s == CUBLAS_STATUS_SUCCESS) {
        /* No algorithm (e.g. odd sizes for this dtype) is not an error: the
         * GEMV path computes the same product. */
        cublasLtMatmulHeuristicResult_t all[LT_CANDIDATES];
        int n = 0;
        cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(cm->lt, op, la, lb, lc, lc, pref, LT_CANDIDATES, all, &n);
        queried = h == CUBLAS_STATUS_SUCCESS;
        if (queried) found = lt_pick_whole_k(cm->lt, op, la, lb, lc, all, n, &res);
    }
    if (s == CUBLAS_STATUS_SUCCESS && found)
        s = cublasLtMatmul(cm->lt, op, &alpha, w, la, in, lb, &beta, out, lc, out, lc, &res.algo,
                           cs->lt_ws, ws, cs->stream);
    if (s == CUBLAS_STATUS_SUCCESS && queried) {
        key.found = found;
        if (found) {
            key.algo = res.algo;
            key.op = op, key.la = la, key.lb = lb, key.lc = lc;
            lt_store(cm, &key); /* takes them unless the cache is full */
            op = key.op, la = key.la, lb = key.lb, lc = key.lc;
        } else {
            lt_store(cm, &key);
        }
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    if (s != CUBLAS_STATUS_SUCCESS && soft) return GPTC_OK;
    if (s != CUBLAS_STATUS_SUCCESS)
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "cuda: cuBLASLt matmul (%d x %d x %d) failed: %s", T,
                         O, I, cublasLtGetStatusString(s));
    *done = found;
    return GPTC_OK;
}

/* The fp32 (T, O) product, with the bias added when not NULL. */
static gptc_status lt_matmul(const cuda_model *cm, cuda_session *cs, float *out, const void *in,
                             const void *w, int ldw, int T, int I, int O, const float *bias,
                             float beta, int *done) {
    return lt_matmul_ex(cm, cs, out, CUDA_R_32F, O, in, w, ldw, T, I, O, bias,
                        CUBLASLT_EPILOGUE_BIAS, beta, 0, done);
}

gptc_status cuda_linear(const cuda_model *cm, cuda_session *cs, const void *in, const void *w,
                        int ldw, int T, int I, int O, cuda_epi e) {
    if (T >= LT_MIN_TOKENS) {
        int done = 0;
        /* The residual add and a plain store need no epilogue pass:
         * cuBLASLt adds the bias and accumulates into (or writes) the fp32
         * output itself. If it has no algorithm for that, the product goes
         * through tmp and the epilogue kernel as for the other modes. */
        static int no_lt_epi = -1; /* GPTC_CUDA_NO_LT_EPI=1: always the epilogue kernel */
        if (no_lt_epi < 0) no_lt_epi = getenv("GPTC_CUDA_NO_LT_EPI") != NULL;
        if ((e.mode == EPI_RESID || e.mode == EPI_STORE) && e.ldo == O && !no_lt_epi) {
            CKST(lt_matmul(cm, cs, (float *)e.out, in, w, ldw, T, I, O, e.bias,
                           e.mode == EPI_RESID ? 1.0f : 0.0f, &done));
            prof_mark(cs, "gemm");
            if (done) return GPTC_OK;
        }
        /* QKV for the tensor-core attention: the biased product in dtype
         * into qkv16, and nothing else - the attention fills the cache. No
         * algorithm for that: the fp32 way below, then rounded. */
        if (e.mode == EPI_QKV && e.qkv16) {
            if (e.ldo == O && e.bias16 && !no_lt_epi) {
                CKST(lt_matmul_ex(cm, cs, e.qkv16, lt_type(cm->dt), O, in, w, ldw, T, I, O, e.bias16,
                                  CUBLASLT_EPILOGUE_BIAS, 0.0f, 1, &done));
                prof_mark(cs, "gemm_qkv16");
                if (done) return GPTC_OK;
            }
            cuda_epi f = e;
            f.qkv16 = NULL;
            CKST(cuda_linear(cm, cs, in, w, ldw, T, I, O, f));
            CK(cuda_convert(cm->dt, e.qkv16, (const float *)e.out, (size_t)T * O, cs->stream));
            return GPTC_OK;
        }
        /* QKV: the biased product straight into qkv, then only the K and V
         * thirds pass through a kernel, on their way to the cache. */
        if (e.mode == EPI_QKV && e.ldo == O && e.bias && !no_lt_epi) {
            CKST(lt_matmul(cm, cs, (float *)e.out, in, w, ldw, T, I, O, e.bias, 0.0f, &done));
            prof_mark(cs, "gemm");
            if (done) {
                CK(cuda_kv_store(cm->dt, (const float *)e.out, T, e, cs->stream));
                prof_mark(cs, "kv_store");
                return GPTC_OK;
            }
        }
        /* gelu_new is cuBLASLt's GELU (the tanh form): bias, activation and
         * the rounding to fp16 / bf16 in the product's epilogue, no fp32
         * round trip. fp32 models keep act_apply's exact tanhf. */
        if (e.mode == EPI_ACT && e.act == ACT_GELU_TANH && e.bias16 && cm->dt != GPTC_DTYPE_F32 &&
            !no_lt_epi) {
            CKST(lt_matmul_ex(cm, cs, e.out, lt_type(cm->dt), e.ldo, in, w, ldw, T, I, O, e.bias16,
                              CUBLASLT_EPILOGUE_GELU_BIAS, 0.0f, 1, &done));
            prof_mark(cs, "gemm_gelu");
            if (done) return GPTC_OK;
        }
        int direct = e.mode == EPI_STORE && !e.bias && e.ldo == O;
        CKST(lt_matmul(cm, cs, direct ? (float *)e.out : cs->tmp, in, w, ldw, T, I, O, NULL, 0.0f,
                       &done));
        prof_mark(cs, "gemm");
        if (done) {
            if (!direct) CK(cuda_epilogue(cm->dt, cs->tmp, T, O, e, cs->stream));
            prof_mark(cs, "epilogue");
            return GPTC_OK;
        }
    }
    CK(cuda_gemv(cm->dt, in, w, ldw, T, I, O, e, cs->stream));
    return GPTC_OK;
}

gptc_status cuda_ln_linear(const cuda_model *cm, cuda_session *cs, const float *x, void *xn,
                           const float *ln_w, const float *ln_b, float eps, const void *w, int ldw,
                           int T, int I, int O, cuda_epi e) {
    if (T < LT_MIN_TOKENS) {
        CK(cuda_gemv_ln(cm->dt, x, ln_w, ln_b, eps, w, ldw, T, I, O, e, xn, cs->stream));
        return GPTC_OK;
    }
    CK(cuda_layernorm(cm->dt, xn, x, ln_w, ln_b, T, I, eps, cs->stream));
    prof_mark(cs, "layernorm");
    return cuda_linear(cm, cs, xn, w, ldw, T, I, O, e);
}

/*
 * GPTC_CUDA_SKIP=embed,qkv,attn,proj,fc,mproj,lnf,head (a comma list) leaves
 * those kernels out of the one-token step, whose outputs are then wrong: a
 * profiling aid, for what each kernel costs inside the replayed graph, where
 * PDL overlaps it with its neighbours (ncu times kernels one at a time).
 */
static int skip_kernel(int T, const char *what) {
    static char list[256];
    static int init;
    if (!init) {
        const char *v = getenv("GPTC_CUDA_SKIP");
        if (v && *v && strlen(v) < sizeof list - 2) {
            snprintf(list, sizeof list, ",%s,", v);
            fprintf(stderr, "gptc: GPTC_CUDA_SKIP=%s: decode steps leave those kernels out (wrong outputs, "
                            "for timing only)\n", v);
        }
        init = 1;
    }
    char key[32];
    snprintf(key, sizeof key, ",%s,", what);
    return T == 1 && list[0] && strstr(list, key) != NULL;
}

/* Whether a one-token pass's products take the embedding (the first QKV's
 * input) and the greedy pick (the LM head's) into their kernels
 * (cuda_gemv_fuses). GPTC_CUDA_FUSE_EMBED=0 / GPTC_CUDA_FUSE_PICK=0: the
 * embedding and argmax kernels, for A/B runs. */
static int fuse_switch(const char *name) {
    const char *v = getenv(name);
    return !(v && *v == '0');
}
static int fuse_embed(const cuda_model *cm) {
    static int on = -1;
    if (on < 0) on = fuse_switch("GPTC_CUDA_FUSE_EMBED");
    return on && cuda_gemv_fuses(cm->dt);
}
static int fuse_pick(const cuda_model *cm) {
    static int on = -1;
    if (on < 0) on = fuse_switch("GPTC_CUDA_FUSE_PICK");
    return on && cuda_gemv_fuses(cm->dt);
}

/* The session's greedy pick into d_tok / d_pos (and ring, if not NULL), by
 * the argmax kernel or the LM head's product. */
static cuda_pick session_pick(cuda_session *cs, int32_t *ring, int ring_mask) {
    cuda_pick p = {cs->am_v, cs->am_i, cs->am_ticket, cs->d_tok, cs->d_pos, ring, ring_mask};
    return p;
}

/* Enqueues the embedding and every block for T tokens whose ids are in
 * device memory, at the position *cs->d_pos; leaves the residual in cs->x. */
static gptc_status enqueue_blocks(const gptc_session *s, cuda_session *cs, const int32_t *d_ids,
                                  int T) {
    const gptc_model *m = s->model;
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    int C = c->n_embd, F = c->n_inner, Cp = cm->Cp, Fp = cm->Fp;
    float eps = c->layer_norm_epsilon;
    cudaStream_t st = cs->stream;
    size_t layer_kv = (size_t)s->max_len * C * cm->es;

    /* One token: the first QKV product computes the embedding as its layer
     * norm's input (the same values, one kernel fewer). */
    int emb = !skip_kernel(T, "embed"), emb_fused = emb && T == 1 && fuse_embed(cm) && !skip_kernel(T, "qkv");
    if (emb && !emb_fused) CK(cuda_embed(cm->dt, cs->x, cm->wte, Cp, cm->wpe, d_ids, cs->d_pos, T, C, st));
    for (int l = 0; l < c->n_layer; l++) {
        const cuda_layer *y = &cm->layers[l];
        char *kc = (char *)cs->k_cache + l * layer_kv, *vc = (char *)cs->v_cache + l * layer_kv;

        prof_mark(cs, "start");
        cuda_epi e = epi_qkv(y, cs->qkv, C, kc, vc);
        e.pos = cs->d_pos;
        int kind = cuda_attention_kind(cm->dt, T, C, c->n_head), fresh = fresh_qkv(cm, T, kind);
        if (fresh) e.qkv16 = cs->qkv16;
        if (l == 0 && emb_fused) {
            cuda_fuse f;
            memset(&f, 0, sizeof f);
            cuda_embed_src m = {cm->wte, cm->wpe, d_ids, cs->d_pos, Cp, cs->x};
            f.emb = m;
            CK(cuda_gemv_ln(cm->dt, cs->x, y->ln1_w, y->ln1_b, eps, y->attn_w, Cp, 1, C, 3 * C, e, NULL, st, &f));
        } else if (!skip_kernel(T, "qkv")) {
            CKST(cuda_ln_linear(cm, cs, cs->x, cs->xn, y->ln1_w, y->ln1_b, eps, y->attn_w, Cp, T, C, 3 * C, e));
        }
        prof_mark(cs, "qkv");
        cuda_kv_map map = {cs->d_pos, NULL, NULL, 0, 0, fresh ? cs->qkv16 : NULL};
        if (!skip_kernel(T, "attn"))
            CK(cuda_attention_run(kind, cm->dt, cs->att, cs->qkv, kc, vc, map, T, C, c->n_head, s->max_len,
                                  gptc_attn_scale(c, l), cs->att_scratch, cs->att_tickets, st));
        prof_mark(cs, "attention");
        if (!skip_kernel(T, "proj"))
            CKST(cuda_linear(cm, cs, cs->att, y->proj_w, Cp, T, C, C, epi(EPI_RESID, y->proj_b, cs->x, C)));
        prof_mark(cs, "proj");

        e = epi_fc(y, m->act, cs->fc, F);
        if (!skip_kernel(T, "fc"))
            CKST(cuda_ln_linear(cm, cs, cs->x, cs->xn, y->ln2_w, y->ln2_b, eps, y->fc_w, Cp, T, C, F, e));
        prof_mark(cs, "fc");
        if (!skip_kernel(T, "mproj"))
            CKST(cuda_linear(cm, cs, cs->fc, y->mproj_w, Fp, T, F, C, epi(EPI_RESID, y->mproj_b, cs->x, C)));
        prof_mark(cs, "mproj");
    }
    return GPTC_OK;
}

/* Appends T tokens at s->len and computes the logits of the last n_logits
 * into host memory, or, with logits NULL and n_logits 1, into cs->logits.
 * Leaves d_pos unspecified: the caller sets it. */
static gptc_status forward(gptc_session *s, cuda_session *cs, const int32_t *ids, int T,
                           int n_logits, float *logits) {
    const gptc_model *m = s->model;
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    cudaStream_t st = cs->stream;
    int C = c->n_embd, V = c->n_vocab;

    /* From pageable memory the copy returns once `ids` has been read. */
    CK(cudaMemcpyAsync(cs->d_ids, ids, (size_t)T * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    cs->dev_pos = -1;
    cs->spec_n = 0; /* steps launched ahead, if any, run first and are forgotten */
    CK(cuda_set_int(cs->d_pos, s->len, st));
    if (T == 1 && cs->mega) {
        /* One token: the persistent decode kernel, without the argmax. */
        cuda_decode_args a = cs->dargs;
        a.tok = cs->d_ids;
        a.argmax = 0;
        CK(cuda_decode_step(cm->dt, &a, st));
        if (n_logits && logits)
            CK(cudaMemcpyAsync(logits, cs->logits, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost, st));
        return GPTC_OK;
    }
    const char *pp = getenv("GPTC_CUDA_PROF_PREFILL");
    if (pp && T >= atoi(pp)) {
        cs->prof_on = 1;
        cs->prof_n = 0;
        prof_mark(cs, "start");
    }
    /* GPTC_CUDA_HOST_TIME=1: how long the host takes to enqueue the blocks
     * (cuBLASLt's per-call heuristic query included), against the GPU's time. */
    static int host_time = -1;
    if (host_time < 0) host_time = getenv("GPTC_CUDA_HOST_TIME") != NULL;
    struct timespec h0, h1;
    if (host_time) clock_gettime(CLOCK_MONOTONIC, &h0);
    gptc_status bst = enqueue_blocks(s, cs, cs->d_ids, T);
    if (host_time) {
        clock_gettime(CLOCK_MONOTONIC, &h1);
        fprintf(stderr, "gptc cuda: %d tokens enqueued in %.3f ms of host time\n", T,
                (h1.tv_sec - h0.tv_sec) * 1e3 + (h1.tv_nsec - h0.tv_nsec) * 1e-6);
    }
    if (cs->prof_on) {
        cs->prof_on = 0;
        double tot[32] = {0};
        const char *names[32];
        int nn = 0;
        float all = prof_collect(cs, tot, names, &nn, 1);
        fprintf(stderr, "gptc cuda prefill profile, %d tokens at %d:\n", T, s->len);
        for (int k = 0; k < nn; k++) fprintf(stderr, "  %-10s %8.4f ms\n", names[k], tot[k]);
        fprintf(stderr, "  %-10s %8.4f ms\n", "blocks", all);
    }
    CKST(bst);
    if (n_logits) {
        int first = T - n_logits;
        CK(cuda_layernorm(cm->dt, cs->xn, cs->x + (size_t)first * C, cm->lnf_w, cm->lnf_b, n_logits,
                          C, c->layer_norm_epsilon, st));
        for (int r = 0; r < n_logits; r += cs->logit_rows) {
            int nr = n_logits - r < cs->logit_rows ? n_logits - r : cs->logit_rows;
            const char *in = (const char *)cs->xn + (size_t)r * C * cm->es;
            CKST(cuda_linear(cm, cs, in, cm->lm_head, cm->Cp, nr, C, V,
                        epi(EPI_STORE, NULL, cs->logits, V)));
            /* To pageable memory the copy returns when it is complete. */
            if (logits)
                CK(cudaMemcpyAsync(logits + (size_t)r * V, cs->logits,
                                   (size_t)nr * V * sizeof(float), cudaMemcpyDeviceToHost, st));
        }
    }
    return GPTC_OK;
}

static gptc_status cuda_eval(gptc_session *s, const int32_t *ids, int T, int n_logits,
                             float *logits) {
    cuda_session *cs = (cuda_session *)s->impl;
    cs->hist_ok = 0; /* these tokens are not in the sampler's history */
    CKST(forward(s, cs, ids, T, n_logits, logits));
    /* Leave d_pos where the next token goes, for the decode graphs. */
    CK(cuda_set_int(cs->d_pos, s->len + T, cs->stream));
    CK(cudaStreamSynchronize(cs->stream));
    cs->dev_pos = s->len + T;
    return GPTC_OK;
}

/* The decode step, T = 1 from d_tok at d_pos, through the argmax (or with
 * `sampler` the processors and the draw) that writes the next token to d_tok
 * and advances d_pos. */
static gptc_status enqueue_decode(const gptc_session *s, cuda_session *cs, int sampler) {
    const gptc_model *m = s->model;
    const gptc_config *c = &m->cfg;
    const cuda_model *cm = (const cuda_model *)m->backend_state;
    int C = c->n_embd, V = c->n_vocab;
    if (cs->mega) {
        prof_mark(cs, "start");
        cuda_decode_args a = cs->dargs;
        a.argmax = !sampler;
        CK(cuda_decode_step(cm->dt, &a, cs->stream));
        prof_mark(cs, "decode");
        if (sampler)
            CK(cuda_sample(cs->d_samp, cs->d_sstate, cs->logits, V, cs->d_hist, cs->d_present,
                           cs->d_tok, cs->d_pos, 1, NULL, 0, cs->stream));
        prof_mark(cs, sampler ? "sample" : "argmax");
        return GPTC_OK;
    }
    CKST(enqueue_blocks(s, cs, cs->d_tok, 1));
    prof_mark(cs, "start");
    if (!skip_kernel(1, "lnf"))
        CK(cuda_layernorm(cm->dt, cs->xn, cs->x, cm->lnf_w, cm->lnf_b, 1, C, c->layer_norm_epsilon, cs->stream));
    prof_mark(cs, "lnf");
    /* Greedy: the head's kernel picks the token as it stores the logits. */
    int pick = !sampler && fuse_pick(cm) && !skip_kernel(1, "head");
    cuda_fuse f;
    memset(&f, 0, sizeof f);
    f.pick = session_pick(cs, cs->d_ring, TOKEN_RING - 1);
    if (!skip_kernel(1, "head"))
        CK(cuda_gemv(cm->dt, cs->xn, cm->lm_head, cm->Cp, 1, C, V, epi(EPI_STORE, NULL, cs->logits, V), cs->stream,
                     pick ? &f : NULL));
    prof_mark(cs, "lm_head");
    if (sampler)
        CK(cuda_sample(cs->d_samp, cs->d_sstate, cs->logits, V, cs->d_hist, cs->d_present,
                       cs->d_tok, cs->d_pos, 1, cs->d_ring, TOKEN_RING - 1, cs->stream, cs->d_samp_scr));
    else if (!pick)
        CK(cuda_argmax(cs->logits, V, f.pick, cs->stream));
    prof_mark(cs, sampler ? "sample" : "argmax");
    return GPTC_OK;
}

static gptc_status capture_decode(const gptc_session *s, cuda_session *cs, int sampler) {
    cudaGraph_t *graph = sampler ? &cs->graph_s : &cs->graph;
    cudaGraphExec_t *exec = sampler ? &cs->exec_s : &cs->exec;
    CK(cudaStreamBeginCapture(cs->stream, cudaStreamCaptureModeThreadLocal));
    gptc_status st = enqueue_decode(s, cs, sampler);
    cudaGraph_t g = NULL;
    /* Capture must end whatever happened inside it. */
    cudaError_t e = cudaStreamEndCapture(cs->stream, &g);
    const char *what = "cudaStreamEndCapture";
    if (st == GPTC_OK && e == cudaSuccess) {
        e = cudaGraphInstantiate(exec, g, 0);
        what = "cudaGraphInstantiate";
    }
    if (st == GPTC_OK && e == cudaSuccess) {
        *graph = g;
        return GPTC_OK;
    }
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
    /* A driver that cannot put the cooperative kernel in a graph: the
     * multi-kernel step computes the same. */
    if (cs->mega && !getenv("GPTC_CUDA_MEGA_STRICT")) {
        cs->mega = 0;
        return capture_decode(s, cs, sampler);
    }
    return st != GPTC_OK ? st : cuda_error(e, what);
}

/* Runs the decode step uncaptured with events between kernels, 20 times,
 * and prints the mean time of each kernel kind; leaves d_pos / d_tok as
 * they were (the step rewrites the same cache row when it runs for real). */
/* After a profile: the position and token as the real step expects them
 * (the profiled runs rewrote the same cache row it will write). */
static gptc_status restore_step(const gptc_session *s, cuda_session *cs, int32_t id) {
    CK(cuda_set_int(cs->d_pos, s->len, cs->stream));
    CK(cuda_set_int(cs->d_tok, id, cs->stream));
    CK(cudaStreamSynchronize(cs->stream));
    cs->dev_pos = s->len;
    cs->dev_tok = id;
    return GPTC_OK;
}

/* The persistent kernel's phases, from the timestamps block 0 takes after
 * each grid barrier (so a phase includes the barrier that ends it). */
static gptc_status profile_mega(gptc_session *s, cuda_session *cs, int32_t id) {
    /* Block 0 stamps the clock at the start and 4 times per phase: after
     * issuing its loads that need no barrier, after the barrier (the wait
     * for the slowest block), after staging the input and after its rows. */
    const int reps = 20, L = s->model->cfg.n_layer, n = 20 * L + 5;
    const char *phase[6] = {"qkv", "attention", "proj", "fc", "mproj", "lm_head"};
    double tot[24] = {0}, all = 0;
    unsigned long long *d_tr = NULL;
    unsigned long long *h_tr = (unsigned long long *)malloc((size_t)n * sizeof *h_tr);
    if (!h_tr) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    cudaError_t e = cudaMalloc((void **)&d_tr, (size_t)n * sizeof *d_tr);
    for (int r = 0; r < reps + 2 && e == cudaSuccess; r++) {
        cuda_set_int(cs->d_pos, s->len, cs->stream);
        cuda_set_int(cs->d_tok, id, cs->stream);
        cuda_decode_args a = cs->dargs;
        a.argmax = 1;
        a.trace = d_tr;
        e = cuda_decode_step(((const cuda_model *)s->model->backend_state)->dt, &a, cs->stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(h_tr, d_tr, (size_t)n * sizeof *h_tr, cudaMemcpyDeviceToHost, cs->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(cs->stream);
        if (e != cudaSuccess || r < 2) continue;
        for (int k = 1; k < n; k++) {
            int i = k - 1;
            tot[i < 20 * L ? i % 20 : 20 + (i - 20 * L)] += (double)(h_tr[k] - h_tr[k - 1]) * 1e-6;
        }
        all += (double)(h_tr[n - 1] - h_tr[0]) * 1e-6;
    }
    free(h_tr);
    cudaFree(d_tr);
    if (e != cudaSuccess) return cuda_error(e, "profile of the decode kernel");
    fprintf(stderr, "gptc cuda profile at position %d (persistent kernel, block 0's clock, ms per step):\n",
            s->len);
    for (int p = 0; p < 6; p++)
        fprintf(stderr, "  %-10s loads %7.4f  barrier %7.4f  stage %7.4f  rows %7.4f\n", phase[p],
                tot[4 * p] / reps, tot[4 * p + 1] / reps, tot[4 * p + 2] / reps, tot[4 * p + 3] / reps);
    fprintf(stderr, "  %-10s %8.4f\n", "total", all / reps);
    return restore_step(s, cs, id);
}

/* The sampler's state as the caller's last step left it, on the stream:
 * the count of draws (its random numbers) and the history's length and
 * mask - after steps it did not take (launched ahead, or profiled). */
static gptc_status sampler_restore(const gptc_session *s, cuda_session *cs) {
    if (!cs->hist_ok) return GPTC_OK;
    cudaStream_t st = cs->stream;
    cuda_sample_state z = {cs->hist_n, cs->samp_step};
    /* From pageable memory the copy returns once the source is read. */
    CK(cudaMemcpyAsync(cs->d_sstate, &z, sizeof z, cudaMemcpyHostToDevice, st));
    CK(cudaMemsetAsync(cs->d_present, 0, (size_t)s->model->cfg.n_vocab, st));
    CK(cuda_mark_present(cs->d_present, cs->d_hist, 0, cs->hist_n, st));
    return GPTC_OK;
}

static gptc_status profile_decode(gptc_session *s, cuda_session *cs, int32_t id, int sampler) {
    if (cs->mega) return profile_mega(s, cs, id);
    const int reps = 20;
    double tot[32] = {0};
    const char *names[32];
    int nn = 0;
    float step_ms = 0;
    for (int r = 0; r < reps + 2; r++) {
        CK(cuda_set_int(cs->d_pos, s->len, cs->stream));
        CK(cuda_set_int(cs->d_tok, id, cs->stream));
        cs->prof_on = 1;
        cs->prof_n = 0;
        prof_mark(cs, "start");
        gptc_status st = enqueue_decode(s, cs, sampler);
        cs->prof_on = 0;
        CKST(st);
        float all = prof_collect(cs, tot, names, &nn, r >= 2);
        if (r >= 2) step_ms += all;
    }
    fprintf(stderr, "gptc cuda profile at position %d (uncaptured, events between kernels):\n", s->len);
    for (int k = 0; k < nn; k++)
        fprintf(stderr, "  %-10s %8.4f ms per step\n", names[k], tot[k] / reps);
    fprintf(stderr, "  %-10s %8.4f ms per step\n", "total", step_ms / reps);
    if (sampler) CKST(sampler_restore(s, cs));
    return restore_step(s, cs, id);
}

/* Whether the decode graphs (argmax or sampler) leave their tokens in the
 * mapped ring (the persistent kernel picks its own and does not). */
static int ring_on(const cuda_session *cs) { return cs->d_ring && !cs->mega; }
/* The token of position p from the ring, once the step that wrote it is done. */
static int32_t ring_at(const cuda_session *cs, int p) {
    return ((const volatile int32_t *)cs->h_ring)[p & (TOKEN_RING - 1)];
}

/* Fills the ring of steps launched ahead (cuda_session.spec_*): each runs
 * the decode graph of the step before it (argmax, or with spec_sampler the
 * sampler) on the token that step picks, at the next position. If the
 * caller's next calls are those steps, their results are waiting
 * (decode_step); any other call finds the stream busy with them and
 * rewrites what they changed (d_pos, d_tok, their cache rows; the
 * sampler's state through spec_cancel). Never past the session's length;
 * off with GPTC_CUDA_NO_SPEC=1 or while profiling. */
static gptc_status speculate(const gptc_session *s, cuda_session *cs) {
    static int off = -1;
    if (off < 0) off = getenv("GPTC_CUDA_NO_SPEC") != NULL || getenv("GPTC_CUDA_PROF") != NULL;
    cudaGraphExec_t ex = cs->spec_sampler ? cs->exec_s : cs->exec;
    if (off || !ex) return GPTC_OK;
    while (cs->spec_n < SPEC_DEPTH && cs->spec_pos + cs->spec_n < s->max_len) {
        int slot = (cs->spec_head + cs->spec_n) % SPEC_DEPTH;
        CK(cudaGraphLaunch(ex, cs->stream));
        if (!ring_on(cs))
            CK(cudaMemcpyAsync(cs->h_next + 1 + slot, cs->d_tok, sizeof(int32_t), cudaMemcpyDeviceToHost,
                               cs->stream));
        CK(cudaEventRecord(cs->spec_ev[slot], cs->stream));
        cs->spec_n++;
        cs->dev_pos = cs->dev_tok = -1;
    }
    return GPTC_OK;
}

/* Forgets the steps launched ahead. They still run, first; after sampler
 * steps the sampler's state goes back to that of the last step the caller
 * took, so that the next draw is the one it would have been without them. */
static gptc_status spec_cancel(const gptc_session *s, cuda_session *cs) {
    int was = cs->spec_n && cs->spec_sampler;
    cs->spec_n = 0;
    return was ? sampler_restore(s, cs) : GPTC_OK;
}

/* One decode step from the graph ending in the argmax or the sampler. */
static gptc_status decode_step(gptc_session *s, int32_t id, int sampler, int32_t *next) {
    cuda_session *cs = (cuda_session *)s->impl;
    cudaStream_t st = cs->stream;
    if (cs->spec_n) {
        if (cs->spec_sampler == sampler && cs->spec_pos == s->len && cs->spec_id == id) {
            int slot = cs->spec_head;
            CK(cudaEventSynchronize(cs->spec_ev[slot]));
            *next = ring_on(cs) ? ring_at(cs, s->len + 1) : cs->h_next[1 + slot];
            cs->spec_head = (slot + 1) % SPEC_DEPTH;
            cs->spec_n--;
            cs->spec_pos++;
            cs->spec_id = *next;
            if (!cs->spec_n) cs->dev_tok = *next, cs->dev_pos = s->len + 1;
            return speculate(s, cs);
        }
        CKST(spec_cancel(s, cs));
    }
    const char *pe = getenv("GPTC_CUDA_PROF");
    if (pe && atoi(pe) == s->len) CKST(profile_decode(s, cs, id, sampler));
    if (cs->dev_pos != s->len) CK(cuda_set_int(cs->d_pos, s->len, st));
    if (cs->dev_tok != id) CK(cuda_set_int(cs->d_tok, id, st));
    cs->dev_pos = cs->dev_tok = -1; /* unknown until the step completes */
    cudaGraphExec_t *ex = sampler ? &cs->exec_s : &cs->exec;
    if (!*ex) CKST(capture_decode(s, cs, sampler));
    CK(cudaGraphLaunch(*ex, st));
    int ring = ring_on(cs);
    if (!ring) CK(cudaMemcpyAsync(cs->h_next, cs->d_tok, sizeof(int32_t), cudaMemcpyDeviceToHost, st));
    CK(cudaStreamSynchronize(st));
    *next = ring ? ring_at(cs, s->len + 1) : *cs->h_next;
    cs->dev_tok = *next;
    cs->dev_pos = s->len + 1;
    /* The persistent kernel's sampler step is not launched ahead. */
    if (sampler && cs->mega) return GPTC_OK;
    cs->spec_sampler = sampler;
    cs->spec_pos = s->len + 1;
    cs->spec_id = *next;
    cs->spec_head = 0;
    return speculate(s, cs);
}

static gptc_status cuda_eval_greedy(gptc_session *s, int32_t id, int32_t *next) {
    ((cuda_session *)s->impl)->hist_ok = 0;
    return decode_step(s, id, 0, next);
}

/* ---- the sampler ---- */

cuda_sampler cuda_sampler_of(const gptc_generate_params *p) {
    cuda_sampler h;
    memset(&h, 0, sizeof h);
    h.repetition_penalty = p->repetition_penalty;
    h.no_repeat_ngram_size = p->no_repeat_ngram_size;
    h.min_new_tokens = p->n_eos_token_ids ? p->min_new_tokens : 0;
    h.n_eos = p->n_eos_token_ids;
    memcpy(h.eos, p->eos_token_ids, sizeof h.eos);
    h.do_sample = p->do_sample && p->temperature != 0.0f; /* generate.c's rule for greedy */
    h.temperature = p->temperature;
    h.top_k = p->top_k;
    h.top_p = p->top_p;
    h.seed = p->seed;
    return h;
}

static gptc_status cuda_sample_init(gptc_session *s, const gptc_generate_params *p,
                                    const int32_t *hist, int n) {
    cuda_session *cs = (cuda_session *)s->impl;
    cudaStream_t st = cs->stream;
    cuda_sampler h = cuda_sampler_of(p);
    /* Sampler steps launched ahead drew with the old parameters and state,
     * which the copies below replace after them on the stream. */
    if (cs->spec_sampler) cs->spec_n = 0;
    /* Plain greedy needs neither history nor the sampler: the argmax graph
     * (a two-stage reduction over many blocks) is faster. */
    cs->plain_greedy = !h.do_sample && h.repetition_penalty == 1.0f && h.no_repeat_ngram_size == 0 &&
                       h.min_new_tokens == 0;
    /* From pageable memory these copies return once the source is read. */
    CK(cudaMemcpyAsync(cs->d_samp, &h, sizeof h, cudaMemcpyHostToDevice, st));
    cuda_sample_state z = {n, 0};
    CK(cudaMemcpyAsync(cs->d_sstate, &z, sizeof z, cudaMemcpyHostToDevice, st));
    CK(cudaMemsetAsync(cs->d_present, 0, (size_t)s->model->cfg.n_vocab, st));
    if (n) {
        CK(cudaMemcpyAsync(cs->d_hist, hist, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, st));
        CK(cuda_mark_present(cs->d_present, cs->d_hist, 0, n, st));
    }
    cs->hist_n = n;
    cs->samp_step = 0;
    cs->hist_ok = 1;
    return GPTC_OK;
}

static gptc_status cuda_eval_sample(gptc_session *s, const int32_t *ids, int n, int32_t *next) {
    cuda_session *cs = (cuda_session *)s->impl;
    cudaStream_t st = cs->stream;
    if (!cs->hist_ok)
        return gptc_fail(GPTC_ERR_ARG, "sampling: eval() ran since sample_init; call it again");
    if (n == 1) {
        CKST(decode_step(s, ids[0], !cs->plain_greedy, next));
        cs->hist_n++;
        cs->samp_step += !cs->plain_greedy;
        return GPTC_OK;
    }
    CKST(spec_cancel(s, cs)); /* before the history grows */
    const gptc_model *m = s->model;
    int V = m->cfg.n_vocab;
    CKST(forward(s, cs, ids, n, 1, NULL));
    if (cs->plain_greedy) {
        CK(cuda_argmax(cs->logits, V, session_pick(cs, NULL, 0), st));
    } else {
        /* forward() left the ids in d_ids: they extend the history. */
        CK(cudaMemcpyAsync(cs->d_hist + cs->hist_n, cs->d_ids, (size_t)n * sizeof(int32_t),
                           cudaMemcpyDeviceToDevice, st));
        CK(cuda_mark_present(cs->d_present, cs->d_hist, cs->hist_n, cs->hist_n + n, st));
        /* and the sampler's count of them: no-repeat-ngram reads hist[0, hist_n) */
        CK(cuda_set_int(&cs->d_sstate->hist_n, cs->hist_n + n, st));
        CK(cuda_sample(cs->d_samp, cs->d_sstate, cs->logits, V, cs->d_hist, cs->d_present,
                       cs->d_tok, NULL, 0, NULL, 0, st, cs->d_samp_scr));
    }
    CK(cuda_set_int(cs->d_pos, s->len + n, st));
    CK(cudaMemcpyAsync(cs->h_next, cs->d_tok, sizeof(int32_t), cudaMemcpyDeviceToHost, st));
    CK(cudaStreamSynchronize(st));
    *next = *cs->h_next;
    cs->hist_n += n;
    cs->samp_step += !cs->plain_greedy;
    cs->dev_tok = *next;
    cs->dev_pos = s->len + n;
    return GPTC_OK;
}

/* ---- the ops: each makes the model's GPU current first ----
 *
 * The current device is a per-thread setting of the CUDA runtime, and a
 * model may be used from any thread (a server runs one engine thread per
 * GPU, each with its own model): so every entry point sets it. When it is
 * already current this costs well under a microsecond. */

static gptc_status use_device(const gptc_model *m) {
    cudaError_t e = cudaSetDevice(m->device);
    return e == cudaSuccess ? GPTC_OK : cuda_error(e, "cudaSetDevice");
}

#define ON_DEVICE(m)                                                                               \
    do {                                                                                           \
        gptc_status st_ = use_device(m);                                                           \
        if (st_ != GPTC_OK) return st_;                                                            \
    } while (0)

static gptc_status op_model_init(gptc_model *m, gptc_dtype dtype) { return cuda_model_init(m, dtype); }
static void op_model_free(gptc_model *m) {
    (void)use_device(m);
    cuda_model_free(m);
}
static gptc_status op_session_init(gptc_session *s) {
    ON_DEVICE(s->model);
    return cuda_session_init(s);
}
static void op_session_free(gptc_session *s) {
    (void)use_device(s->model);
    cuda_session_free(s);
}
static gptc_status op_eval(gptc_session *s, const int32_t *ids, int T, int n_logits, float *logits) {
    ON_DEVICE(s->model);
    return cuda_eval(s, ids, T, n_logits, logits);
}
static gptc_status op_eval_greedy(gptc_session *s, int32_t id, int32_t *next) {
    ON_DEVICE(s->model);
    return cuda_eval_greedy(s, id, next);
}
static gptc_status op_sample_init(gptc_session *s, const gptc_generate_params *p, const int32_t *hist, int n) {
    ON_DEVICE(s->model);
    return cuda_sample_init(s, p, hist, n);
}
static gptc_status op_eval_sample(gptc_session *s, const int32_t *ids, int n, int32_t *next) {
    ON_DEVICE(s->model);
    return cuda_eval_sample(s, ids, n, next);
}
static gptc_status op_session_copy(gptc_session *dst, const gptc_session *src) {
    ON_DEVICE(dst->model);
    return cuda_session_copy(dst, src);
}
static gptc_status op_kv_new(gptc_model *m, int32_t n_blocks, int32_t block_size, void **kv) {
    ON_DEVICE(m);
    return cuda_kv_new(m, n_blocks, block_size, kv);
}
static void op_kv_free(gptc_model *m, void *kv) {
    (void)use_device(m);
    cuda_kv_free(m, kv);
}
static gptc_status op_kv_copy(gptc_model *m, void *kv, int32_t dst, int32_t src, int32_t n_pos) {
    ON_DEVICE(m);
    return cuda_kv_copy(m, kv, dst, src, n_pos);
}
static gptc_status op_kv_eval(gptc_model *m, void *kv, const gptc_pass *p, float *logits) {
    ON_DEVICE(m);
    return cuda_kv_eval(m, kv, p, logits);
}
static gptc_status op_kv_sampler_new(gptc_model *m, void *kv, const gptc_generate_params *p, const int32_t *hist,
                                     int32_t n, int32_t max_len, void **sampler) {
    ON_DEVICE(m);
    return cuda_kv_sampler_new(m, kv, p, hist, n, max_len, sampler);
}
static void op_kv_sampler_free(gptc_model *m, void *kv, void *sampler) {
    (void)use_device(m);
    cuda_kv_sampler_free(m, kv, sampler);
}

extern "C" const gptc_backend_ops gptc_cuda_backend = {
    "cuda",        op_model_init,  op_model_free,  op_session_init, op_session_free,
    op_eval,       op_eval_greedy, op_sample_init, op_eval_sample,  op_session_copy,
    op_kv_new,     op_kv_free,     op_kv_copy,     op_kv_eval,      op_kv_sampler_new,
    op_kv_sampler_free,
};
