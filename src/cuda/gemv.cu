/*
 * gemv.cu - matrix-vector products with fused epilogues, and the epilogue on
 * its own for products computed by cuBLASLt.
 *
 * Decode is bound by reading the weights, so the product streams each weight
 * row once with 128-bit loads (8 halves per lane, 512 bytes per warp per
 * step), one warp per output row with all of a lane's loads issued before
 * its multiplies, and reduces with warp shuffles. The input row is staged
 * in shared memory as fp32, zero-padded to the padded row length, so the
 * padding of the weights contributes nothing. A few tokens (short prompts,
 * the decode step of a small batch) take a block per token and row block,
 * the tokens of a row block finding its weights in L2. From GEMV_NT_MIN
 * tokens on (a large batch) a block takes GEMV_NT of them: it stages all
 * their rows and multiplies each weight it loads with every one, so the
 * weights are read once per 8 tokens; their layer norm then comes from
 * ln_stage_kernel, once per token, rather than from every block.
 *
 * Batch invariance: a token's sums run in the same order whatever the
 * number of tokens, the block shape or the token's place in its block
 * (chunk by chunk for each lane, then the warp's shuffle tree, then the
 * bias), and its layer norm is computed by the same code with the same
 * block size, fused or staged. So a token's outputs are bitwise those of a
 * launch with T = 1: the batch engine's pass gives each sequence what a
 * session gives it alone (tests/gpu/test_kernels.cu checks it).
 *
 * The epilogue - bias, activation, residual add, K/V cache write - runs on
 * the fp32 dot product before anything is stored, so that a decode layer is
 * a handful of kernels and the activations take one trip through memory.
 */
#include <stdlib.h>

#include "act.cuh"
#include "common.cuh"
#include "kernels.cuh"

#define GEMV_WARPS 4 /* one output row per warp; small blocks so every SM gets several */

template <typename T>
__device__ __forceinline__ void epi_store(const cuda_epi &e, int t, int o, float v) {
    if (e.bias) v += e.bias[o];
    size_t idx = (size_t)t * e.ldo + o;
    switch (e.mode) {
    case EPI_QKV:
        ((float *)e.out)[idx] = v;
        if (o >= e.C) {
            size_t row = (e.rows ? (size_t)e.rows[t] : (size_t)(*e.pos + t)) * e.C;
            if (o < 2 * e.C) ((T *)e.k_cache)[row + (o - e.C)] = from_f<T>(v);
            else ((T *)e.v_cache)[row + (o - 2 * e.C)] = from_f<T>(v);
        }
        break;
    case EPI_ACT: ((T *)e.out)[idx] = from_f<T>(act_apply(v, e.act)); break;
    case EPI_RESID: ((float *)e.out)[idx] += v; break;
    default: ((float *)e.out)[idx] = v; break;
    }
}

/*
 * One warp per output row. Each lane owns the 8-element chunks lane,
 * lane + 32, ... of the row; it issues the loads of up to NCL chunks before
 * it waits on any (the first batch even before the input is staged), so a
 * row of I = 768 fp16 is 3 independent 16-byte loads per lane in flight.
 * The block takes tokens [blockIdx.x * NT, + NT) of the n_tok, rows of
 * blockIdx.y.
 *
 * LN: the input is the fp32 residual (T, I) and the block applies the layer
 * norm (ln_w, ln_b, eps) while staging it - mean, then biased variance, as
 * layernorm_kernel - rounding the result to T as the separate kernel's
 * output would be, so the product sees the same values without the extra
 * launch and round trip.
 */
/*
 * Stages one token's fp32 residual row x (I) into xs (xs4 is the same
 * memory) and returns its layer-norm statistics: mean, then the biased
 * variance over the staged values, as layernorm_kernel. The fused GEMV and
 * ln_stage_kernel share it, so the two sum in one order (block_sum of this
 * block's threads): a token normalised by either gets the same values.
 */
__device__ __forceinline__ void ln_stage_row(const float *__restrict__ x, float *xs, float4 *xs4, int I,
                                             float eps, float *red, float &mean, float &rstd) {
    int nthr = blockDim.x;
    float sum = 0.0f;
    if ((I & 3) == 0) {
        for (int i = threadIdx.x * 4; i < I; i += nthr * 4) {
            float4 v = __ldg(reinterpret_cast<const float4 *>(x + i));
            xs4[i >> 2] = v;
            sum += (v.x + v.y) + (v.z + v.w);
        }
    } else {
        for (int i = threadIdx.x; i < I; i += nthr) sum += (xs[i] = x[i]);
    }
    mean = block_sum(sum, red) / (float)I; /* barriers publish xs */
    float var = 0.0f;
    for (int i = threadIdx.x; i < I; i += nthr) {
        float d = xs[i] - mean;
        var += d * d;
    }
    var = block_sum(var, red) / (float)I;
    rstd = 1.0f / sqrtf(var + eps);
}

/* Where element i of a staged row goes in the multi-token layout. */
__device__ __forceinline__ int nt_slot(int i, int nch) { return ((i >> 3) + ((i & 4) ? nch : 0)) * 4 + (i & 3); }

template <typename T, int NCL, bool LN, int R, int NT>
__device__ __forceinline__ void gemv_body(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I,
                                          int O, int n_tok, cuda_epi e, const float *__restrict__ ln_w,
                                          const float *__restrict__ ln_b, float eps) {
    static_assert(!LN || NT == 1, "several tokens take their layer norm from ln_stage_kernel");
    extern __shared__ float4 xs4[]; /* NT rows of ldw floats; LN: then ln_w, ln_b */
    __shared__ float red[32];
    float *xs = reinterpret_cast<float *>(xs4);
    /* Row blocks along x, tokens along y, as the decode step always had
     * them; several groups of NT > 1 tokens: groups along x, so that the
     * groups of one row block run together and share its weights in L2. */
    bool rows_x = NT == 1 || n_tok <= NT;
    int tg = rows_x ? blockIdx.y : blockIdx.x, rb = rows_x ? blockIdx.x : blockIdx.y;
    int t0 = tg * NT, nt = NT == 1 ? 1 : min(NT, n_tok - t0), nthr = blockDim.x;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o0 = (rb * (nthr >> 5) + warp) * R; /* this warp's R rows */
    /* Rows past O are clamped (read again, never stored): every warp reaches
     * the barrier. */
    const T *r[R];
    float acc[R][NT], bias[R];
    int nch = ldw / 8, ld4 = ldw / 4;
    /* Parameters never change: fetch them before waiting on the previous
     * kernel. */
#pragma unroll
    for (int q = 0; q < R; q++) {
        r[q] = w + (size_t)min(o0 + q, O - 1) * ldw;
#pragma unroll
        for (int j = 0; j < NT; j++) acc[q][j] = 0.0f;
        bias[q] = e.bias && o0 + q < O ? __ldg(e.bias + o0 + q) : 0.0f;
    }
    float *lw = xs + (size_t)NT * ldw, *lb = lw + ldw;
    if (LN)
        for (int i = threadIdx.x; i < I; i += nthr) lw[i] = __ldg(ln_w + i), lb[i] = __ldg(ln_b + i);
    for (int base = 0; base < nch; base += 32 * NCL) {
        Vec8<T> wv[R][NCL];
#pragma unroll
        for (int k = 0; k < NCL; k++) {
            int c = base + lane + 32 * k;
#pragma unroll
            for (int q = 0; q < R; q++)
                if (c < nch) wv[q][k].load(r[q] + (size_t)c * 8);
        }
        if (base == 0) {
            pdl_wait(); /* the input is the previous kernels' output */
            pdl_trigger();
            /* One token: as the decode step has always had it (a general
             * form measured ~6% slower). Several (never LN): every row is
             * fetched at once, the loads in flight together. */
            if (NT == 1) {
                if (LN) {
                    float mean, rstd;
                    ln_stage_row((const float *)in_ + (size_t)t0 * I, xs, xs4, I, eps, red, mean, rstd);
                    for (int i = threadIdx.x; i < ldw; i += nthr)
                        xs[i] = i < I ? to_f(from_f<T>((xs[i] - mean) * rstd * lw[i] + lb[i])) : 0.0f;
                } else {
                    const T *x = (const T *)in_ + (size_t)t0 * I;
                    if ((I & 7) == 0) {
                        for (int c = threadIdx.x; c < I / 8; c += nthr) {
                            float v[8];
                            load8(x + c * 8, v);
                            xs4[2 * c] = make_float4(v[0], v[1], v[2], v[3]);
                            xs4[2 * c + 1] = make_float4(v[4], v[5], v[6], v[7]);
                        }
                        for (int i = I + threadIdx.x; i < ldw; i += nthr) xs[i] = 0.0f;
                    } else {
                        for (int i = threadIdx.x; i < ldw; i += nthr) xs[i] = i < I ? to_f(x[i]) : 0.0f;
                    }
                }
            } else {
                /* Split layout (nt_slot): a chunk's first four values in
                 * the row's first half, the last four in its second, so
                 * that a warp's 16-byte reads of them are contiguous (no
                 * bank conflicts); the same values as the one-token
                 * layout, so the same sums. */
                const T *x0 = (const T *)in_ + (size_t)t0 * I;
                if ((I & 7) == 0) {
                    int n8 = I / 8;
#pragma unroll 4
                    for (int q = threadIdx.x; q < nt * n8; q += nthr) {
                        int j = q / n8, c = q - j * n8;
                        float v[8];
                        load8(x0 + (size_t)j * I + c * 8, v);
                        xs4[j * ld4 + c] = make_float4(v[0], v[1], v[2], v[3]);
                        xs4[j * ld4 + nch + c] = make_float4(v[4], v[5], v[6], v[7]);
                    }
                    for (int q = threadIdx.x; q < nt * (ldw - I); q += nthr) {
                        int j = q / (ldw - I);
                        xs[j * ldw + nt_slot(I + (q - j * (ldw - I)), nch)] = 0.0f;
                    }
                } else {
#pragma unroll 4
                    for (int q = threadIdx.x; q < nt * ldw; q += nthr) {
                        int j = q / ldw, i = q - j * ldw;
                        xs[j * ldw + nt_slot(i, nch)] = i < I ? to_f(x0[(size_t)j * I + i]) : 0.0f;
                    }
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < NCL; k++) {
            int c = base + lane + 32 * k;
            if (c < nch) {
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j >= nt) break;
                    float4 xa = NT == 1 ? xs4[2 * c] : xs4[j * ld4 + c];
                    float4 xb = NT == 1 ? xs4[2 * c + 1] : xs4[j * ld4 + nch + c];
#pragma unroll
                    for (int q = 0; q < R; q++) acc[q][j] += wv[q][k].dot(xa, xb);
                }
            }
        }
    }
    e.bias = NULL;
    /* Every lane holds the whole sum after warp_sum's butterfly (the same
     * bits in each); several tokens spread their stores over the lanes, so
     * that the read-modify-writes of the residual go out together. */
#pragma unroll
    for (int j = 0; j < NT; j++) {
        if (j >= nt) break;
#pragma unroll
        for (int q = 0; q < R; q++) {
            float v = warp_sum(acc[q][j]);
            if (lane == (NT == 1 ? 0 : (j * R + q) & 31) && o0 + q < O)
                epi_store<T>(e, t0 + j, o0 + q, v + bias[q]);
        }
    }
}

template <typename T, int NCL, bool LN, int R, int NT>
__global__ void __launch_bounds__(256)
    gemv_kernel(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I, int O,
                int n_tok, cuda_epi e, const float *__restrict__ ln_w,
                const float *__restrict__ ln_b, float eps) {
    gemv_body<T, NCL, LN, R, NT>(in_, w, ldw, I, O, n_tok, e, ln_w, ln_b, eps);
}

/* The multi-token product held to 3 blocks per SM (so at most 85 registers
 * a thread, and 4 chunks in flight a lane): measured on an H100, 25% faster
 * than 2 blocks per SM with 8 chunks in flight (bench/NOTES-cuda.md). */
template <typename T, bool LN, int R, int NT>
__global__ void __launch_bounds__(256, 3)
    gemv_nt_kernel(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I, int O,
                   int n_tok, cuda_epi e, const float *__restrict__ ln_w,
                   const float *__restrict__ ln_b, float eps) {
    gemv_body<T, 4, LN, R, NT>(in_, w, ldw, I, O, n_tok, e, ln_w, ln_b, eps);
}

/*
 * The layer norm of gemv_kernel<LN>'s staging, for products of several
 * tokens: a block of as many threads per token takes the same sums in the
 * same order and writes the row rounded to T, which the multi-token product
 * stages as it would any input - the values the fused kernel would have
 * multiplied, bit for bit, without each block of rows normalising every
 * token again (measured: that made the fused multi-token form slower than
 * a token per block).
 */
template <typename T>
__global__ void __launch_bounds__(1024)
    ln_stage_kernel(T *xn, const float *__restrict__ x, const float *__restrict__ ln_w,
                    const float *__restrict__ ln_b, float eps, int I) {
    extern __shared__ float4 xs4[]; /* I floats */
    __shared__ float red[32];
    float *xs = reinterpret_cast<float *>(xs4);
    int nthr = blockDim.x;
    pdl_wait();
    pdl_trigger();
    float mean, rstd;
    ln_stage_row(x + (size_t)blockIdx.x * I, xs, xs4, I, eps, red, mean, rstd);
    T *o = xn + (size_t)blockIdx.x * I;
    for (int i = threadIdx.x; i < I; i += nthr)
        o[i] = from_f<T>((xs[i] - mean) * rstd * __ldg(ln_w + i) + __ldg(ln_b + i));
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static int g_lnw = -1, g_lnr, g_nw, g_nr, g_nt_min, g_ntw, g_ntr, g_ntb;

/* Tokens per block of a launch of T > 1 (T = 1: one). */
#define GEMV_NT 8
/* The largest dynamic shared memory a block may have (the multi-token
 * kernels are allowed all of it by cuda_gemv_prepare). */
static size_t g_smem_optin;

template <typename W, bool LN, int R, int NT>
static cudaError_t gemv_launch_nt(const void *in, const void *w, int ldw, int T, int I, int O,
                                  cuda_epi epi, const float *ln_w, const float *ln_b, float eps,
                                  int warps, size_t smem, cudaStream_t st) {
    int rows = warps * R;
    unsigned row_blocks = (unsigned)((O + rows - 1) / rows);
    unsigned groups = (unsigned)((T + NT - 1) / NT);
    /* gemv_kernel's layout (rows_x there). */
    bool rows_x = NT == 1 || groups == 1;
    if (!rows_x && row_blocks > 65535) return cudaErrorInvalidConfiguration;
    dim3 grid = rows_x ? dim3(row_blocks, groups) : dim3(groups, row_blocks);
    int per_lane = (ldw / 8 + 31) / 32;
    const W *wp = (const W *)w;
    if constexpr (NT > 1) {
        if (g_ntb == 3)
            return launch_pdl(gemv_nt_kernel<W, LN, R, NT>, grid, dim3(warps * 32), smem, st, in, wp,
                              ldw, I, O, T, epi, ln_w, ln_b, eps);
    }
    if (per_lane <= 4)
        return launch_pdl(gemv_kernel<W, 4, LN, R, NT>, grid, dim3(warps * 32), smem, st, in, wp,
                          ldw, I, O, T, epi, ln_w, ln_b, eps);
    if (per_lane <= 8)
        return launch_pdl(gemv_kernel<W, 8, LN, R, NT>, grid, dim3(warps * 32), smem, st, in, wp,
                          ldw, I, O, T, epi, ln_w, ln_b, eps);
    return launch_pdl(gemv_kernel<W, 13, LN, R, NT>, grid, dim3(warps * 32), smem, st, in, wp, ldw,
                      I, O, T, epi, ln_w, ln_b, eps);
}

/* The launch shapes, from the environment once (see gemv_launch). */
static void gemv_shapes(void) {
    if (g_lnw >= 0) return;
    g_lnw = env_int("GPTC_GEMV_LNW", 8), g_lnr = env_int("GPTC_GEMV_LNR", 2);
    g_nw = env_int("GPTC_GEMV_W", 8), g_nr = env_int("GPTC_GEMV_R", 2);
    g_nt_min = env_int("GPTC_GEMV_NT_MIN", 12), g_ntw = env_int("GPTC_GEMV_NTW", 8);
    g_ntr = env_int("GPTC_GEMV_NTR", 2);
    g_ntb = env_int("GPTC_GEMV_NTB", 3);
}

template <typename W, bool LN>
static cudaError_t gemv_launch(const void *in, const void *w, int ldw, int T, int I, int O,
                               cuda_epi epi, const float *ln_w, const float *ln_b, float eps,
                               void *xn, cudaStream_t st) {
    /* Every block stages (and for LN normalises) the whole input row, so
     * rows per block trade that shared-memory staging and its L2 traffic
     * against blocks in flight. Measured on an H200 (bench/NOTES-cuda.md):
     * 8 warps x 2 rows beat 2, 4 warps and 1 row, for LN and plain alike.
     * Multi-token blocks from GEMV_NT_MIN tokens on: a block per token (the
     * tokens of a row block reading its weights from L2) took 1.44-1.61 ms
     * per decode step at batch 8 against 1.60-1.72 for blocks of 8 tokens,
     * about the same at 16, and 5.0-5.5 against 4.6-4.9 at 32 (gpt2, H200).
     * With gemv_nt_kernel (H100): 8 tokens 0.85 / 8.70 ms (gpt2 / gpt2-xl)
     * a token per block against 0.90 / 6.32 in blocks of 8; 12 tokens 1.17 /
     * 12.19 against 0.96 / 7.90: blocks of several from 12 on.
     * GPTC_GEMV_{LNW,LNR,W,R} override, for
     * measurements, and GPTC_GEMV_NT_MIN (T from which blocks take several
     * tokens; 0: never), GPTC_GEMV_NT{W,R} (their warps and rows) and
     * GPTC_GEMV_NTB (3: gemv_nt_kernel; 1: gemv_kernel's 2 blocks per SM). */
    gemv_shapes();
    size_t row = (size_t)ldw * sizeof(float);
    int multi = g_nt_min > 0 && T >= g_nt_min && T > 1 && GEMV_NT * row <= g_smem_optin;
    if (LN && multi && xn && (size_t)I * sizeof(float) <= g_smem_optin) {
        /* The layer norm once per token, then the multi-token product. */
        cudaError_t e = launch_pdl(ln_stage_kernel<W>, dim3((unsigned)T), dim3(g_lnw * 32),
                                   (size_t)I * sizeof(float), st, (W *)xn, (const float *)in, ln_w,
                                   ln_b, eps, I);
        if (e != cudaSuccess) return e;
        return gemv_launch<W, false>(xn, w, ldw, T, I, O, epi, NULL, NULL, 0.0f, NULL, st);
    }
    if (!LN && multi) {
        if (g_ntr == 1)
            return gemv_launch_nt<W, false, 1, GEMV_NT>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f,
                                                        g_ntw, GEMV_NT * row, st);
        return gemv_launch_nt<W, false, 2, GEMV_NT>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f,
                                                    g_ntw, GEMV_NT * row, st);
    }
    int warps = LN ? g_lnw : g_nw, R = LN ? g_lnr : g_nr;
    size_t smem = row * (LN ? 3 : 1); /* LN: + ln_w, ln_b */
    if (R == 2)
        return gemv_launch_nt<W, LN, 2, 1>(in, w, ldw, T, I, O, epi, ln_w, ln_b, eps, warps, smem,
                                           st);
    return gemv_launch_nt<W, LN, 1, 1>(in, w, ldw, T, I, O, epi, ln_w, ln_b, eps, warps, smem, st);
}

cudaError_t cuda_gemv(gptc_dtype dt, const void *in, const void *w, int ldw, int T, int I, int O,
                      cuda_epi epi, cudaStream_t st) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W,
                        err = gemv_launch<W, false>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f,
                                                    NULL, st));
    return err != cudaSuccess ? err : cudaGetLastError();
}

cudaError_t cuda_gemv_ln(gptc_dtype dt, const float *x, const float *ln_w, const float *ln_b,
                         float eps, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                         void *xn, cudaStream_t st) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W,
                        err = gemv_launch<W, true>(x, w, ldw, T, I, O, epi, ln_w, ln_b, eps, xn,
                                                   st));
    return err != cudaSuccess ? err : cudaGetLastError();
}

template <typename W, bool LN, int R, int NT> static cudaError_t gemv_prepare3(int bytes) {
    cudaError_t e;
    if ((e = cudaFuncSetAttribute(gemv_kernel<W, 4, LN, R, NT>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) != cudaSuccess)
        return e;
    if ((e = cudaFuncSetAttribute(gemv_kernel<W, 8, LN, R, NT>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) != cudaSuccess)
        return e;
    return cudaFuncSetAttribute(gemv_kernel<W, 13, LN, R, NT>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
template <typename W, bool LN> static cudaError_t gemv_prepare1(int bytes) {
    cudaError_t e = gemv_prepare3<W, LN, 1, 1>(bytes);
    return e != cudaSuccess ? e : gemv_prepare3<W, LN, 2, 1>(bytes);
}
/* The multi-token kernels and the layer norm staging may use all the
 * device allows; gemv_launch checks each launch's need against it. */
template <typename W> static cudaError_t gemv_prepare_nt(int bytes) {
    cudaError_t e = gemv_prepare3<W, false, 1, GEMV_NT>(bytes);
    if (e == cudaSuccess) e = gemv_prepare3<W, false, 2, GEMV_NT>(bytes);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(gemv_nt_kernel<W, false, 2, GEMV_NT>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(gemv_nt_kernel<W, false, 1, GEMV_NT>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(ln_stage_kernel<W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 bytes);
    return e;
}
cudaError_t cuda_gemv_prepare(int max_ldw, int max_ln_ldw) {
    /* The limits only grow, per device (see cuda_attention_prepare). */
    static int max_bytes_of[CUDA_MAX_DEVICES], max_ln_bytes_of[CUDA_MAX_DEVICES];
    static bool nt_ready[CUDA_MAX_DEVICES];
    int slot = cuda_device_slot();
    int &max_bytes = max_bytes_of[slot], &max_ln_bytes = max_ln_bytes_of[slot];
    int bytes = max_ldw * (int)sizeof(float), ln_bytes = 3 * max_ln_ldw * (int)sizeof(float);
    if (bytes < max_bytes) bytes = max_bytes;
    if (ln_bytes < max_ln_bytes) ln_bytes = max_ln_bytes;
    max_bytes = bytes, max_ln_bytes = ln_bytes;
    cudaError_t e;
    if (bytes > 48 * 1024 &&
        ((e = gemv_prepare1<float, false>(bytes)) != cudaSuccess ||
         (e = gemv_prepare1<__half, false>(bytes)) != cudaSuccess ||
         (e = gemv_prepare1<__nv_bfloat16, false>(bytes)) != cudaSuccess))
        return e;
    if (ln_bytes > 48 * 1024 &&
        ((e = gemv_prepare1<float, true>(ln_bytes)) != cudaSuccess ||
         (e = gemv_prepare1<__half, true>(ln_bytes)) != cudaSuccess ||
         (e = gemv_prepare1<__nv_bfloat16, true>(ln_bytes)) != cudaSuccess))
        return e;
    if (!nt_ready[slot]) {
        int dev = 0, optin = 0;
        if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) !=
                cudaSuccess)
            return e;
        /* The static reduction buffer takes part of the block's shared memory. */
        int nt_bytes = optin - 32 * (int)sizeof(float);
        if ((e = gemv_prepare_nt<float>(nt_bytes)) != cudaSuccess ||
            (e = gemv_prepare_nt<__half>(nt_bytes)) != cudaSuccess ||
            (e = gemv_prepare_nt<__nv_bfloat16>(nt_bytes)) != cudaSuccess)
            return e;
        /* the same on every device a process uses, in practice; the
         * smallest is safe */
        if (!g_smem_optin || (size_t)nt_bytes < g_smem_optin) g_smem_optin = (size_t)nt_bytes;
        nt_ready[slot] = true;
    }
    return cudaSuccess;
}

/* One block row per token (no index division), the outputs of the row
 * spread over blockIdx.x and the threads: coalesced, one pass. */
template <typename T> __global__ void epilogue_kernel(const float *tmp, int O, cuda_epi e) {
    int t = blockIdx.y;
    const float *row = tmp + (size_t)t * O;
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < O; o += gridDim.x * blockDim.x)
        epi_store<T>(e, t, o, row[o]);
}

cudaError_t cuda_epilogue(gptc_dtype dt, const float *tmp, int T, int O, cuda_epi epi,
                          cudaStream_t st) {
    unsigned gx = (unsigned)((O + 255) / 256);
    if (gx > 64) gx = 64;
    dim3 grid(gx, (unsigned)T);
    GPTC_DISPATCH_DTYPE(dt, W, epilogue_kernel<W><<<grid, 256, 0, st>>>(tmp, O, epi));
    return cudaGetLastError();
}
