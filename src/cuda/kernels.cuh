/*
 * kernels.cuh - launchers of the CUDA backend's kernels (host functions).
 *
 * Each launcher takes the weight dtype at run time, enqueues its kernel on
 * `st` and returns cudaGetLastError(). Pointers typed `void *` hold elements
 * of that dtype; `float *` are always fp32. Launchers read the sequence
 * position (and, for the embedding, the token ids) from device memory, so a
 * decode step captured once in a CUDA graph stays valid as they change.
 *
 * Legend: T tokens in the pass, C n_embd, I inputs, O outputs, D head size,
 * NH heads, V vocab. Linear weights are (O, ldw) row-major, ldw = I rounded
 * up to 8 elements, the padding zero.
 */
#ifndef GPTC_CUDA_KERNELS_CUH
#define GPTC_CUDA_KERNELS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

/* model.h's C designated initializers are a C++ extension that g++ -Wextra
 * would flag in every file including it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
extern "C" {
#include "gptc.h"
#include "model.h"
}
#pragma GCC diagnostic pop

/* Rows of linear weights are padded to this many elements for 128-bit loads. */
#define CUDA_ROW_ALIGN 8
static inline int cuda_pad_row(int n) { return (n + CUDA_ROW_ALIGN - 1) / CUDA_ROW_ALIGN * CUDA_ROW_ALIGN; }

/* What a matrix product does with each value v = dot(in row t, w row o). */
enum {
    EPI_STORE, /* out (T, ldo) fp32 = v + bias */
    EPI_QKV,   /* out fp32 = v + bias; the K and V thirds also go into the cache at *pos + t */
    EPI_ACT,   /* out (T, ldo) dtype = act(v + bias) */
    EPI_RESID, /* out (T, ldo) fp32 += v + bias (the residual stream) */
};
/* Where a decode step's greedy pick goes (pick.cuh): the blocks' partial
 * (value, index) pairs (one each a block of the kernel that picks), a ticket
 * (zero between steps; the kernel leaves it zero), the token, the position
 * it advances (NULL: none, a batch pass's pick) and, when not NULL, the
 * mapped ring the token of position p also goes to (ring[p & ring_mask]). */
typedef struct {
    float *part_v;
    int32_t *part_i;
    int *ticket;
    int32_t *token, *pos, *ring;
    int ring_mask;
} cuda_pick;

/* A one-token layer-norm product whose input row is the embedding (the
 * first layer's QKV of a decode step): x = wte[*ids] + wpe[*pos], as
 * cuda_embed computes it, written to x by one block and normalised by all
 * (cuda_fuse). */
typedef struct {
    const void *wte; /* NULL: the product reads its input row as usual */
    const float *wpe;
    const int32_t *ids, *pos;
    int ldw;
    float *x;
} cuda_embed_src;

typedef struct {
    int mode;
    const float *bias; /* (O) or NULL */
    void *out;
    int ldo;
    void *k_cache, *v_cache; /* EPI_QKV: this layer's cache, rows of C */
    int C;
    const int32_t *pos;  /* EPI_QKV: device position of token 0; token t goes to row *pos + t */
    const int32_t *rows; /* EPI_QKV: or, when not NULL, each token's row (a paged cache) */
    gptc_act act;        /* EPI_ACT */
    const void *bias16;  /* EPI_ACT, EPI_QKV with qkv16: bias in the weights' dtype (cuBLASLt's epilogues) */
    /* EPI_QKV, a pass of >= LT_MIN_TOKENS for the tensor-core attention: q,
     * k, v (+ bias) in the weights' dtype into qkv16 (rows of 3C) instead of
     * qkv and the cache - the attention reads them there and writes the
     * cache itself (cuda_kv_map.fresh). NULL otherwise. */
    void *qkv16;
} cuda_epi;

/* What a one-token product may also do (cuda_gemv_fuses), in kernels of
 * its own - the others keep their parameters and code as they are: */
typedef struct {
    /* EPI_STORE: the argmax of the stored values, as cuda_argmax picks it
     * (pick.ticket NULL: not) */
    cuda_pick pick;
    /* cuda_gemv_ln: the input row is the embedding (emb.wte NULL: not) */
    cuda_embed_src emb;
} cuda_fuse;

/* x (T, C) fp32 = wte[ids[t]] + wpe[*pos + t]; wte rows ldw apart. */
cudaError_t cuda_embed(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe,
                       const int32_t *ids, const int32_t *pos, int T, int C, cudaStream_t st);
/* The same with each token's own position: wpe[pos[t]]. */
cudaError_t cuda_embed_at(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe,
                          const int32_t *ids, const int32_t *pos, int T, int C, cudaStream_t st);
/* A batch pass launched ahead (paged.cu): ids[t] = picks[t], pos[t] + 1,
 * crow[t] from the block table, written back, then cuda_embed_at's rows. */
cudaError_t cuda_embed_advance(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe, int32_t *ids,
                               int32_t *pos, int32_t *crow, const int32_t *tab, const int32_t *tables, int bs,
                               const int32_t *picks, int T, int C, cudaStream_t st);

/* out (T, C) dtype = layernorm(x (T, C)) * w + b, biased variance. */
cudaError_t cuda_layernorm(gptc_dtype dt, void *out, const float *x, const float *w,
                           const float *b, int T, int C, float eps, cudaStream_t st);
/* The same on gathered rows: out row r = layernorm(x row rows[r]), r < n. */
cudaError_t cuda_layernorm_rows(gptc_dtype dt, void *out, const float *x, const int32_t *rows,
                                const float *w, const float *b, int n, int C, float eps,
                                cudaStream_t st);

/* The matrix product in (T, I) dtype @ w (O, ldw)^T with the epilogue fused,
 * for decode and small T: fp16 / bf16 on tensor cores, 16 rows a block (8 or
 * 4 where 16 leave SMs idle) and up to 32 tokens (each weight read once for
 * them); fp32 one warp per output row, blocks of 8 tokens from GEMV_NT_MIN
 * tokens on. Every token's outputs
 * are summed in one order whatever T is: a token's result is bitwise the
 * same in a launch of any T as alone (the paged pass relies on it). */
cudaError_t cuda_gemv(gptc_dtype dt, const void *in, const void *w, int ldw, int T, int I, int O,
                      cuda_epi epi, cudaStream_t st, const cuda_fuse *fuse = NULL);
/* cuda_gemv of layernorm(x (T, I) fp32) * ln_w + ln_b (rounded to the dtype,
 * as cuda_layernorm's output), fused into the product for one token. For
 * T > 1, xn (T, I) dtype, when not NULL, takes the normalised rows first
 * (the same values), so that the multi-token product can run; with NULL
 * each token takes a block of its own. Batch-invariant either way. */
cudaError_t cuda_gemv_ln(gptc_dtype dt, const float *x, const float *ln_w, const float *ln_b,
                         float eps, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                         void *xn, cudaStream_t st, const cuda_fuse *fuse = NULL);
/* Lets cuda_gemv / cuda_gemv_ln take rows up to max_ldw elements (dynamic shared memory). */
cudaError_t cuda_gemv_prepare(int max_ldw, int max_ln_ldw);
/* Whether one token's products in this dtype take a cuda_fuse (the
 * tensor-core kernel: fp16 / bf16); elsewhere they refuse it. */
int cuda_gemv_fuses(gptc_dtype dt);

/* Applies `epi` to v = tmp (T, O) fp32 (the output of a cuBLASLt product). */
cudaError_t cuda_epilogue(gptc_dtype dt, const float *tmp, int T, int O, cuda_epi epi,
                          cudaStream_t st);
/* EPI_QKV's cache write alone: the K and V thirds of qkv (T, epi.ldo) fp32,
 * which already hold v + bias. */
cudaError_t cuda_kv_store(gptc_dtype dt, const float *qkv, int T, cuda_epi epi, cudaStream_t st);

/*
 * Where attention finds its queries' positions and K/V rows. A session's
 * cache is contiguous: query t is at position *pos + t, and position j is
 * row j of the layer's cache. The batch engine's paged cache (tables not
 * NULL): query t is at pos[t] of its own sequence, whose position j is row
 * table[j / block_size] * block_size + j % block_size, table = tables +
 * tab[t]. All device memory. solo (paged only): each query is its
 * sequence's only token in the pass (a decode pass), so the kernel before
 * the attention wrote no row of its sequence below pos[t] - the split kernel
 * may read those before its PDL wait.
 */
typedef struct {
    const int32_t *pos;
    const int32_t *tables, *tab;
    int block_size;
    int solo;
    /* CUDA_ATT_MMA: the pass's q, k, v (T, 3C) in dtype, as cuda_epi.qkv16 left
     * them: q and the pass's own keys come from here, not from qkv and the
     * cache, and the kernel writes those K/V rows to the cache. NULL: not. */
    const void *fresh;
} cuda_kv_map;

/*
 * Causal attention of T queries at positions *pos + t over the cache rows
 * [0, *pos + t] of one layer. q is read from qkv (T, 3C) fp32; out (T, C)
 * dtype. See attention.cu for the kernels and when each runs.
 */
cudaError_t cuda_attention(gptc_dtype dt, void *out, const float *qkv, const void *k_cache,
                           const void *v_cache, const int32_t *pos, int T, int C, int NH,
                           int max_len, float scale, float *scratch, int *tickets,
                           cudaStream_t st);
/* Passes of fewer tokens than this use the split (flash-decoding) kernel,
 * chunks of ATT_CHUNK keys. Its scratch: cuda_attention_scratch_floats
 * floats, and NH * ATT_SPLIT_MAXT ints of tickets that must start at zero
 * (the kernel leaves them zero). One pair per session (passes are serial). */
#define ATT_SPLIT_MAXT 16
#define ATT_CHUNK 64
size_t cuda_attention_scratch_floats(int NH, int D, int max_len);
/* Dynamic shared memory one attention block needs for sessions of max_len. */
size_t cuda_attention_smem(int D, int max_len);
/* Raises the kernels' shared memory limit to that need. */
cudaError_t cuda_attention_prepare(int D, int max_len);

/* The kernels, as cuda_attention picks them for T queries of one sequence:
 * SPLIT and FULL take every query on its own (any positions), MMA and TILE
 * a run of queries at consecutive positions of one sequence. */
enum { CUDA_ATT_SPLIT, CUDA_ATT_MMA, CUDA_ATT_TILE, CUDA_ATT_FULL };
int cuda_attention_kind(gptc_dtype dt, int T, int C, int NH);
/*
 * cuda_attention with a given kernel and the queries' positions and rows
 * from `map`; max_len is more than every query's position. SPLIT takes any
 * T, with cuda_attention_split_floats(NH, D, T, max_len) floats of scratch
 * and NH * T tickets (zero, and left zero).
 */
size_t cuda_attention_split_floats(int NH, int D, int T, int max_len);
cudaError_t cuda_attention_run(int kind, gptc_dtype dt, void *out, const float *qkv,
                               const void *k_cache, const void *v_cache, cuda_kv_map map, int T,
                               int C, int NH, int max_len, float scale, float *scratch,
                               int *tickets, cudaStream_t st);
/*
 * CUDA_ATT_MMA for several prompts in one launch: segs holds n_segs pairs
 * (first row, count) of the pass on the device, each a run of queries of
 * one sequence at consecutive positions, the longest max_T; map, out and qkv
 * (and map.fresh) are indexed by the pass's rows. Each query gets the bits a
 * cuda_attention_run of its segment alone gives it.
 */
cudaError_t cuda_attention_mma_segs(gptc_dtype dt, void *out, const float *qkv, const void *k_cache,
                                    const void *v_cache, cuda_kv_map map, const int32_t *segs, int n_segs,
                                    int max_T, int C, int NH, float scale, cudaStream_t st);

/* Blocks of the first argmax stage: cuda_argmax's partial buffers hold this many. */
#define CUDA_ARGMAX_PARTS 256
/* *p.token = argmax(logits (V)) (lowest index on ties, like torch.argmax),
 * then *p.pos += 1: the end of a decode step (cuda_pick). p.part_v / part_i:
 * CUDA_ARGMAX_PARTS each. */
cudaError_t cuda_argmax(const float *logits, int V, cuda_pick p, cudaStream_t st);
/* out[r] = argmax of row r of logits (n_rows, V), as cuda_argmax picks. */
cudaError_t cuda_argmax_rows(const float *logits, int V, int n_rows, int32_t *out, cudaStream_t st);

/*
 * Logits processors and the sampler on the device (sample.cu), with the
 * semantics of the CPU's sampling.c (transformers' generate() order):
 * repetition penalty, no-repeat-ngram, min-new-tokens, then for sampling
 * temperature, top-k, top-p and a categorical draw; else the argmax.
 * The parameters and state live in device memory so that a CUDA graph that
 * contains the sampler stays valid when they change.
 */
typedef struct {
    float repetition_penalty; /* 1: off */
    int no_repeat_ngram_size; /* 0: off */
    int min_new_tokens;       /* eos ids are banned while step < this */
    int n_eos;
    int32_t eos[GPTC_MAX_EOS];
    int do_sample;     /* 0: argmax of the processed scores */
    float temperature; /* > 0 when do_sample */
    int top_k;         /* 0: off */
    float top_p;       /* 1: off */
    uint64_t seed;
} cuda_sampler;
typedef struct {
    int32_t hist_n; /* tokens in hist (prompt and generated) */
    int32_t step;   /* tokens sampled so far: min_new_tokens and the RNG counter */
} cuda_sample_state;
/*
 * One sampling step, one thread block. If `append`, first
 * hist[state->hist_n++] = *token and present[*token] = 1 (the token the step
 * just evaluated). Then logits (V) fp32 are processed in place (on return
 * they hold the processed scores, filtered tokens -INFINITY), the next token
 * is drawn with u = sample_uniform(seed, state->step) of sampling.c, written
 * to *token, state->step += 1, and *pos += 1 when pos is not NULL; with pos
 * and a ring (mapped host memory, as cuda_argmax's) the token also goes to
 * ring[new *pos & ring_mask].
 * present: V bytes, 1 for each token in hist (may be NULL when the
 * repetition penalty is off). hist has room for one more token when append.
 * With `scratch` (cuda_sample_scratch_bytes) top-k runs over many blocks.
 */
cudaError_t cuda_sample(const cuda_sampler *p, cuda_sample_state *state, float *logits, int V,
                        int32_t *hist, uint8_t *present, int32_t *token, int32_t *pos, int append,
                        int32_t *ring, int ring_mask, cudaStream_t st, void *scratch = NULL);
/* Bytes of device memory, zeroed once, that let cuda_sample spread top-k
 * (k <= 128) over many blocks (0: V too large for it; the one-block kernel
 * serves). A scratch serves one stream at a time. */
size_t cuda_sample_scratch_bytes(int V);
/*
 * The batch engine's sampler: one row of a pass's logits, with its
 * sequence's own parameters, state, history and mask (as cuda_sample's),
 * or p NULL for a row left alone. `token` is the token to append when
 * `append` (the one the pass evaluated for this sequence).
 */
typedef struct {
    const cuda_sampler *p;
    cuda_sample_state *state;
    int32_t *hist;
    uint8_t *present;
    int32_t token, append;
} cuda_sample_row;
/* cuda_sample for each row r of logits (n_rows, V) whose rows[r].p is set,
 * a block per row, the drawn token to tokens[r]; rows[] in device memory. */
cudaError_t cuda_sample_rows(const cuda_sample_row *rows, int n_rows, float *logits, int V,
                             int32_t *tokens, cudaStream_t st);
/* present[hist[i]] = 1 for i in [from, to): after the host wrote hist. */
cudaError_t cuda_mark_present(uint8_t *present, const int32_t *hist, int from, int to,
                              cudaStream_t st);

/*
 * The batch-1 decode step as one persistent kernel (decode.cu): embedding,
 * every layer, final norm, LM head (logits written) and, with argmax set,
 * the greedy token written to *tok and *pos advanced. One block per SM,
 * launched cooperatively (grid barriers between the phases).
 */
typedef struct {
    const void *attn_w, *proj_w, *fc_w, *mproj_w; /* dtype, rows padded */
    const float *ln1_w, *ln1_b, *attn_b, *proj_b, *ln2_w, *ln2_b, *fc_b, *mproj_b;
    void *k_cache, *v_cache; /* this layer's (max_len, C) */
    float scale;             /* attention scale of this layer */
} cuda_decode_layer;
typedef struct {
    int n_layer, C, NH, F, V, Cp, Fp, blocks;
    float eps;
    gptc_act act;
    const void *wte, *lm_head; /* (V, Cp) */
    const float *wpe, *lnf_w, *lnf_b;
    const cuda_decode_layer *layers; /* device array of n_layer */
    float *x;      /* (C) residual */
    float *qkv;    /* (C) at least: q */
    float *part;   /* cuda_decode_part_floats */
    void *h;       /* (F) dtype */
    float *logits; /* (V) */
    int32_t *tok, *pos;
    unsigned *sync; /* CUDA_DECODE_SYNC_WORDS, zero before the first launch (and after each) */
    float *am_v;    /* (blocks) */
    int32_t *am_i;  /* (blocks) */
    int argmax;
    unsigned long long *trace; /* NULL, or n_layer * 20 + 5 timestamps (profiling) */
} cuda_decode_args;
/* Words of cuda_decode_args.sync. */
#define CUDA_DECODE_SYNC_WORDS 32
/* 1 if the kernel handles this shape (head size a multiple of 8, <= 128). */
int cuda_decode_supported(int C, int NH, int max_len);
size_t cuda_decode_part_floats(int NH, int D, int max_len);
/* The grid the kernel runs (one block per SM); 0 if unknown. */
int cuda_decode_blocks(void);
cudaError_t cuda_decode_step(gptc_dtype dt, const cuda_decode_args *a, cudaStream_t st);

/* *p = v, as a kernel (no host buffer that could change before the copy runs). */
cudaError_t cuda_set_int(int32_t *p, int32_t v, cudaStream_t st);

/* dst (n) dtype = src (n) fp32, for the weight upload. */
cudaError_t cuda_convert(gptc_dtype dt, void *dst, const float *src, size_t n, cudaStream_t st);

#endif
