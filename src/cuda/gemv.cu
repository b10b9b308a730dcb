/*
 * gemv.cu - matrix-vector products with fused epilogues, and the epilogue on
 * its own for products computed by cuBLASLt.
 *
 * Decode is bound by reading the weights, so the product streams each weight
 * row once with 128-bit loads (8 halves per lane, 512 bytes per warp per
 * step), one warp per output row with all of a lane's loads issued before
 * its multiplies, and reduces with warp shuffles. The input row is staged in shared memory as
 * fp32, zero-padded to the padded row length, so the padding of the weights
 * contributes nothing. blockIdx.y picks the token: for a few tokens (decode,
 * short prompts) each weight row comes from L2 after the first token.
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
            size_t row = (size_t)(*e.pos + t) * e.C;
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
 *
 * LN: the input is the fp32 residual (T, I) and the block applies the layer
 * norm (ln_w, ln_b, eps) while staging it - mean, then biased variance, as
 * layernorm_kernel - rounding the result to T as the separate kernel's
 * output would be, so the product sees the same values without the extra
 * launch and round trip.
 */
template <typename T, int NCL, bool LN, int R>
__global__ void __launch_bounds__(256)
    gemv_kernel(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I, int O,
                cuda_epi e, const float *__restrict__ ln_w, const float *__restrict__ ln_b,
                float eps) {
    extern __shared__ float4 xs4[]; /* ldw floats */
    __shared__ float red[32];
    float *xs = reinterpret_cast<float *>(xs4);
    int t = blockIdx.y, nthr = blockDim.x;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o0 = (blockIdx.x * (nthr >> 5) + warp) * R; /* this warp's R rows */
    /* Rows past O are clamped (read again, never stored): every warp reaches
     * the barrier. */
    const T *r[R];
    float acc[R], bias[R];
    int nch = ldw / 8;
    /* Parameters never change: fetch them before waiting on the previous
     * kernel. */
#pragma unroll
    for (int q = 0; q < R; q++) {
        r[q] = w + (size_t)min(o0 + q, O - 1) * ldw;
        acc[q] = 0.0f;
        bias[q] = e.bias && o0 + q < O ? __ldg(e.bias + o0 + q) : 0.0f;
    }
    float *lw = xs + ldw, *lb = lw + ldw;
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
            if (LN) {
                const float *x = (const float *)in_ + (size_t)t * I;
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
                float mean = block_sum(sum, red) / (float)I; /* barriers publish xs */
                float var = 0.0f;
                for (int i = threadIdx.x; i < I; i += nthr) {
                    float d = xs[i] - mean;
                    var += d * d;
                }
                var = block_sum(var, red) / (float)I;
                float rstd = 1.0f / sqrtf(var + eps);
                for (int i = threadIdx.x; i < ldw; i += nthr)
                    xs[i] = i < I ? to_f(from_f<T>((xs[i] - mean) * rstd * lw[i] + lb[i])) : 0.0f;
            } else {
                const T *x = (const T *)in_ + (size_t)t * I;
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
            __syncthreads();
        }
#pragma unroll
        for (int k = 0; k < NCL; k++) {
            int c = base + lane + 32 * k;
            if (c < nch) {
                float4 xa = xs4[2 * c], xb = xs4[2 * c + 1];
#pragma unroll
                for (int q = 0; q < R; q++) acc[q] += wv[q][k].dot(xa, xb);
            }
        }
    }
    e.bias = NULL;
#pragma unroll
    for (int q = 0; q < R; q++) {
        float v = warp_sum(acc[q]);
        if (lane == 0 && o0 + q < O) epi_store<T>(e, t, o0 + q, v + bias[q]);
    }
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

template <typename W, bool LN, int R>
static cudaError_t gemv_launch_r(const void *in, const void *w, int ldw, int T, int I, int O,
                                 cuda_epi epi, const float *ln_w, const float *ln_b, float eps,
                                 int warps, cudaStream_t st) {
    int rows = warps * R;
    dim3 grid((unsigned)((O + rows - 1) / rows), (unsigned)T);
    size_t smem = (size_t)ldw * sizeof(float) * (LN ? 3 : 1); /* LN: + ln_w, ln_b */
    int per_lane = (ldw / 8 + 31) / 32;
    const W *wp = (const W *)w;
    if (per_lane <= 4)
        return launch_pdl(gemv_kernel<W, 4, LN, R>, grid, dim3(warps * 32), smem, st, in, wp, ldw,
                          I, O, epi, ln_w, ln_b, eps);
    if (per_lane <= 8)
        return launch_pdl(gemv_kernel<W, 8, LN, R>, grid, dim3(warps * 32), smem, st, in, wp, ldw,
                          I, O, epi, ln_w, ln_b, eps);
    return launch_pdl(gemv_kernel<W, 13, LN, R>, grid, dim3(warps * 32), smem, st, in, wp, ldw, I,
                      O, epi, ln_w, ln_b, eps);
}

template <typename W, bool LN>
static cudaError_t gemv_launch(const void *in, const void *w, int ldw, int T, int I, int O,
                               cuda_epi epi, const float *ln_w, const float *ln_b, float eps,
                               cudaStream_t st) {
    /* Every block stages (and for LN normalises) the whole input row, so
     * rows per block trade that shared-memory staging and its L2 traffic
     * against blocks in flight. Measured on an H200 (bench/NOTES-cuda.md):
     * 8 warps x 2 rows beat 2, 4 warps and 1 row, for LN and plain alike.
     * GPTC_GEMV_{LNW,LNR,W,R} override, for measurements. */
    static int lnw = -1, lnr, nw, nr;
    if (lnw < 0)
        lnw = env_int("GPTC_GEMV_LNW", 8), lnr = env_int("GPTC_GEMV_LNR", 2),
        nw = env_int("GPTC_GEMV_W", 8), nr = env_int("GPTC_GEMV_R", 2);
    int warps = LN ? lnw : nw, R = LN ? lnr : nr;
    if (R == 2)
        return gemv_launch_r<W, LN, 2>(in, w, ldw, T, I, O, epi, ln_w, ln_b, eps, warps, st);
    return gemv_launch_r<W, LN, 1>(in, w, ldw, T, I, O, epi, ln_w, ln_b, eps, warps, st);
}

cudaError_t cuda_gemv(gptc_dtype dt, const void *in, const void *w, int ldw, int T, int I, int O,
                      cuda_epi epi, cudaStream_t st) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W, err = gemv_launch<W, false>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f, st));
    return err != cudaSuccess ? err : cudaGetLastError();
}

cudaError_t cuda_gemv_ln(gptc_dtype dt, const float *x, const float *ln_w, const float *ln_b,
                         float eps, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                         cudaStream_t st) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W, err = gemv_launch<W, true>(x, w, ldw, T, I, O, epi, ln_w, ln_b, eps, st));
    return err != cudaSuccess ? err : cudaGetLastError();
}

template <typename W, bool LN, int R> static cudaError_t gemv_prepare2(int bytes) {
    cudaError_t e;
    if ((e = cudaFuncSetAttribute(gemv_kernel<W, 4, LN, R>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) != cudaSuccess)
        return e;
    if ((e = cudaFuncSetAttribute(gemv_kernel<W, 8, LN, R>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)) != cudaSuccess)
        return e;
    return cudaFuncSetAttribute(gemv_kernel<W, 13, LN, R>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
template <typename W, bool LN> static cudaError_t gemv_prepare1(int bytes) {
    cudaError_t e = gemv_prepare2<W, LN, 1>(bytes);
    return e != cudaSuccess ? e : gemv_prepare2<W, LN, 2>(bytes);
}
cudaError_t cuda_gemv_prepare(int max_ldw, int max_ln_ldw) {
    /* The limits only grow (see cuda_attention_prepare). */
    static int max_bytes = 0, max_ln_bytes = 0;
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
