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
typedef struct {
    int mode;
    const float *bias; /* (O) or NULL */
    void *out;
    int ldo;
    void *k_cache, *v_cache; /* EPI_QKV: this layer's (max_len, C) */
    int C;
    const int32_t *pos; /* EPI_QKV: device position of token 0 */
    gptc_act act;       /* EPI_ACT */
} cuda_epi;

/* x (T, C) fp32 = wte[ids[t]] + wpe[*pos + t]; wte rows ldw apart. */
cudaError_t cuda_embed(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe,
                       const int32_t *ids, const int32_t *pos, int T, int C, cudaStream_t st);

/* out (T, C) dtype = layernorm(x (T, C)) * w + b, biased variance. */
cudaError_t cuda_layernorm(gptc_dtype dt, void *out, const float *x, const float *w,
                           const float *b, int T, int C, float eps, cudaStream_t st);

/* The matrix product in (T, I) dtype @ w (O, ldw)^T, one warp per output row
 * with the epilogue fused. For decode and small T. */
cudaError_t cuda_gemv(gptc_dtype dt, const void *in, const void *w, int ldw, int T, int I, int O,
                      cuda_epi epi, cudaStream_t st);
/* cuda_gemv of layernorm(x (T, I) fp32) * ln_w + ln_b (rounded to the dtype,
 * as cuda_layernorm's output) without the separate kernel. */
cudaError_t cuda_gemv_ln(gptc_dtype dt, const float *x, const float *ln_w, const float *ln_b,
                         float eps, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                         cudaStream_t st);
/* Lets cuda_gemv / cuda_gemv_ln take rows up to max_ldw elements (dynamic shared memory). */
cudaError_t cuda_gemv_prepare(int max_ldw, int max_ln_ldw);

/* Applies `epi` to v = tmp (T, O) fp32 (the output of a cuBLASLt product). */
cudaError_t cuda_epilogue(gptc_dtype dt, const float *tmp, int T, int O, cuda_epi epi,
                          cudaStream_t st);

/*
 * Causal attention of T queries at positions *pos + t over the cache rows
 * [0, *pos + t] of one layer. q is read from qkv (T, 3C) fp32; out (T, C)
 * dtype. See attention.cu for the three kernels and when each runs.
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

/* Blocks of the first argmax stage: cuda_argmax's partial buffers hold this many. */
#define CUDA_ARGMAX_PARTS 256
/* *token = argmax(logits (V)) (lowest index on ties, like torch.argmax), then
 * *pos += 1: the end of a decode step. part_v/part_i: CUDA_ARGMAX_PARTS each. */
cudaError_t cuda_argmax(const float *logits, int V, float *part_v, int32_t *part_i, int32_t *token,
                        int32_t *pos, cudaStream_t st);

/* *p = v, as a kernel (no host buffer that could change before the copy runs). */
cudaError_t cuda_set_int(int32_t *p, int32_t v, cudaStream_t st);

/* dst (n) dtype = src (n) fp32, for the weight upload. */
cudaError_t cuda_convert(gptc_dtype dt, void *dst, const float *src, size_t n, cudaStream_t st);

#endif
