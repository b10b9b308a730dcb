/*
 * backend.cuh - what the CUDA backend's host files share (private to
 * src/cuda): the device weights (cuda_model), a session's buffers and
 * stream (cuda_session, which the paged pass also uses as its workspace),
 * checked-call macros, and the linear layers that pick GEMV or cuBLASLt.
 * backend.cu holds sessions, the forward pass and the decode graph;
 * paged.cu the batch engine's paged K/V cache.
 */
#ifndef GPTC_CUDA_BACKEND_CUH
#define GPTC_CUDA_BACKEND_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <string.h>

#include "kernels.cuh"

extern "C" {
#include "backend.h"
#include "internal.h"
}

/* Below this many tokens a product runs as GEMV kernels (bandwidth bound,
 * epilogue fused); from it on through cuBLASLt (compute bound). */
#define LT_MIN_TOKENS 8
#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
/* Logits of a prefill are computed and copied in chunks of at most this. */
#define LOGITS_CHUNK_BYTES ((size_t)64 << 20)

typedef struct {
    void *attn_w, *proj_w, *fc_w, *mproj_w; /* dtype, rows padded to Cp / Fp */
    float *ln1_w, *ln1_b, *attn_b, *proj_b, *ln2_w, *ln2_b, *fc_b, *mproj_b;
    void *fc_b16;   /* fc_b in dtype: cuBLASLt's GELU epilogue takes the output's type */
    void *attn_b16; /* attn_b in dtype: the same for a long pass's fp16 QKV output (cuda_epi.qkv16) */
} cuda_layer;

typedef struct {
    gptc_dtype dt;
    size_t es;  /* bytes per element of dt */
    int Cp, Fp; /* padded row lengths of matrices with C / F inputs */
    char *arena;
    void *wte, *lm_head; /* (V, Cp); lm_head == wte when tied */
    float *wpe;          /* (P, C) */
    float *lnf_w, *lnf_b;
    cuda_layer *layers;
    cublasLtHandle_t lt;
    struct lt_algo_cache *lt_algos; /* cuBLASLt's choice per product shape (backend.cu) */
} cuda_model;

/* Greedy steps a session launches ahead of the caller (decode_step). */
#define SPEC_DEPTH 2
/* Entries of a session's token ring (cuda_session.h_ring): more than the
 * steps in flight at once (SPEC_DEPTH + 1), a power of two. */
#define TOKEN_RING 4

typedef struct {
    cudaStream_t stream;
    void *k_cache, *v_cache; /* (L, max_len, C) dtype */
    float *x;                /* (max_len, C) residual stream */
    float *qkv;              /* (max_len, 3C) */
    void *qkv16;             /* (max_len, 3C) dtype: a long pass's q, k, v for the tensor-core attention */
    float *tmp;              /* (max_len, max(3C, F)) cuBLASLt output before its epilogue */
    void *xn;                /* (max_len, C) dtype: layer norm output */
    void *att;               /* (max_len, C) dtype: attention output */
    void *fc;                /* (max_len, F) dtype: activation output */
    float *logits;           /* (logit_rows, V) */
    int logit_rows;
    int32_t *d_ids; /* (max_len) */
    int32_t *d_pos; /* the position of the next token */
    int32_t *d_tok; /* decode input token; the argmax writes the next one here */
    float *am_v;    /* argmax partials */
    int32_t *am_i;
    int *am_ticket; /* the argmax's last-block ticket, zero between steps */
    int32_t *h_next; /* pinned */
    /* The decode graphs' tokens: the token of position p lands in
     * h_ring[p & (TOKEN_RING - 1)] (pinned, mapped: d_ring is its device
     * address), written by the argmax or sampler kernel itself, so that a step needs
     * no copy on the stream after it - between two replays of the graph.
     * H200, decode ms/token: gpt2 0.248 -> 0.240, gpt2-xl 1.574 -> 1.566
     * (bench/NOTES-cuda.md, session 12). NULL (GPTC_CUDA_TOKEN_COPY=1, or
     * no mapping): the token is copied to h_next. */
    int32_t *h_ring, *d_ring;
    void *lt_ws;
    float *att_scratch; /* split attention partials */
    int *att_tickets;   /* (n_head * ATT_SPLIT_MAXT), zero between passes */
    /* GPTC_CUDA_PROF=pos: one decode step at that position is run outside
     * the graph with an event after each kernel; per-kernel times to stderr. */
    int prof_on, prof_n;
    cudaEvent_t prof_ev[1024];
    const char *prof_name[1024];
    /* The sampler (sample_init / eval_sample): parameters, state and the
     * token history on the device; hist_n mirrors the device's count. */
    cuda_sampler *d_samp;
    cuda_sample_state *d_sstate;
    int32_t *d_hist;    /* (max_len) */
    uint8_t *d_present; /* (V) */
    void *d_samp_scr;   /* cuda_sample's scratch (top-k over many blocks); NULL: one block (GPTC_SAMPLE_MB=0) */
    int hist_n, hist_ok, plain_greedy;
    int samp_step; /* the draws since sample_init that the caller took: the device's state->step */
    /* The decode step as one persistent kernel (decode.cu), when the shape
     * allows it and GPTC_CUDA_MEGA=1 (an experiment: measured slower than
     * the kernel-per-op graph so far, bench/NOTES-cuda.md): its arguments,
     * per-layer table and barrier words. */
    int mega;
    cuda_decode_args dargs;
    cuda_decode_layer *d_layers;
    float *dec_part;
    unsigned *dec_sync;
    /* The decode step ending in the argmax (graph) or the sampler (graph_s). */
    cudaGraph_t graph, graph_s;
    cudaGraphExec_t exec, exec_s;
    int32_t dev_pos, dev_tok; /* what d_pos / d_tok hold once the stream is idle; -1 unknown */
    /* Decoding ahead (decode_step): after a step its graph (argmax or
     * sampler) is launched again, SPEC_DEPTH times, each on the token the
     * one before picks (it reads d_tok on the device), so that the host's
     * round trip (copy the token, wake, launch the next graph: ~12-18 us on
     * an H100) overlaps the GPU's work. spec_n such steps are in flight,
     * the oldest at position spec_pos on token spec_id, in slot spec_head:
     * its token lands in the ring (or h_next[1 + slot]) when spec_ev[slot]
     * completes. */
    int spec_n, spec_pos, spec_id, spec_head;
    int spec_sampler; /* those steps are the sampler graph's (else the argmax's) */
    cudaEvent_t spec_ev[SPEC_DEPTH];
} cuda_session;

/* A failed CUDA call as a gptc status and message (out of memory says so). */
gptc_status cuda_error(cudaError_t e, const char *what);

/* Checked calls for functions returning gptc_status: CUDA, cuBLASLt, gptc. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cuda_error(e_, #call);                                       \
    } while (0)

#define CKLT(call)                                                                                 \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return gptc_fail(GPTC_ERR_UNSUPPORTED, "cuda: %s failed: %s", #call,                   \
                             cublasLtGetStatusString(s_));                                         \
    } while (0)

#define CKST(call)                                                                                 \
    do {                                                                                           \
        gptc_status st_ = (call);                                                                  \
        if (st_ != GPTC_OK) return st_;                                                            \
    } while (0)

static inline cuda_epi epi(int mode, const float *bias, void *out, int ldo) {
    cuda_epi e;
    memset(&e, 0, sizeof e);
    e.mode = mode;
    e.bias = bias;
    e.out = out;
    e.ldo = ldo;
    return e;
}
/* A layer's QKV product: q, k, v (+ bias) into qkv (rows of 3C), K and V
 * also into the layer's cache kc / vc; the caller says where (pos or rows). */
static inline cuda_epi epi_qkv(const cuda_layer *y, float *qkv, int C, void *kc, void *vc) {
    cuda_epi e = epi(EPI_QKV, y->attn_b, qkv, 3 * C);
    e.bias16 = y->attn_b16;
    e.k_cache = kc;
    e.v_cache = vc;
    e.C = C;
    return e;
}
/* Whether a pass of T tokens (one sequence) whose attention is `kind` has
 * its QKV product write q, k, v in fp16 / bf16 (cuda_epi.qkv16) and the attention
 * take them from there and fill the cache (cuda_kv_map.fresh). Sessions and
 * the batch engine decide here alike. GPTC_CUDA_NO_FRESH=1: not. */
static inline int fresh_qkv(const cuda_model *cm, int T, int kind) {
    static int off = -1;
    if (off < 0) off = getenv("GPTC_CUDA_NO_FRESH") != NULL;
    return !off && T >= LT_MIN_TOKENS && kind == CUDA_ATT_MMA && cm->dt != GPTC_DTYPE_F32;
}
/* A layer's FC product: act(v + bias) into fc (rows of F), with the bias in
 * the weights' dtype too, for cuBLASLt's fused GELU. Sessions and the batch
 * engine build it here alike: a prompt's products must take the same path
 * in both. */
static inline cuda_epi epi_fc(const cuda_layer *y, gptc_act act, void *fc, int F) {
    cuda_epi e = epi(EPI_ACT, y->fc_b, fc, F);
    e.act = act;
    e.bias16 = y->fc_b16;
    return e;
}

/*
 * A linear layer on T tokens: in (T, I) dtype, w (O, ldw), epilogue e;
 * GEMV kernels below LT_MIN_TOKENS tokens, else cuBLASLt. Uses cs's stream,
 * tmp (T rows) and cuBLASLt workspace. cuda_ln_linear: the same of
 * layernorm(x (T, I) fp32) (ln_w, ln_b, eps), through xn (T, I) dtype when
 * the product is not a GEMV (which fuses the norm).
 */
gptc_status cuda_linear(const cuda_model *cm, cuda_session *cs, const void *in, const void *w,
                        int ldw, int T, int I, int O, cuda_epi e);
gptc_status cuda_ln_linear(const cuda_model *cm, cuda_session *cs, const float *x, void *xn,
                           const float *ln_w, const float *ln_b, float eps, const void *w, int ldw,
                           int T, int I, int O, cuda_epi e);

/* The paged K/V cache's ops (paged.cu), as backend.h describes them. */
gptc_status cuda_kv_new(gptc_model *m, int32_t n_blocks, int32_t block_size, void **kv);
void cuda_kv_free(gptc_model *m, void *kv);
gptc_status cuda_kv_copy(gptc_model *m, void *kv, int32_t dst, int32_t src, int32_t n_pos);
gptc_status cuda_kv_eval(gptc_model *m, void *kv, const gptc_pass *p, float *logits);
gptc_status cuda_kv_sampler_new(gptc_model *m, void *kv, const gptc_generate_params *p,
                                const int32_t *hist, int32_t n, int32_t max_len, void **sampler);
void cuda_kv_sampler_free(gptc_model *m, void *kv, void *sampler);

/* generate()'s parameters as the device sampler takes them. */
cuda_sampler cuda_sampler_of(const gptc_generate_params *p);

#endif
