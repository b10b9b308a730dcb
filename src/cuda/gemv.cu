/*
 * gemv.cu - matrix-vector products with fused epilogues, and the epilogue on
 * its own for products computed by cuBLASLt.
 *
 * Decode is bound by reading the weights, so the product streams each weight
 * row once with 128-bit loads (8 halves per lane, 512 bytes per warp per
 * step), one warp per output row, two rows per warp for more loads in flight,
 * and reduces with warp shuffles. The input row is staged in shared memory as
 * fp32, zero-padded to the padded row length, so the padding of the weights
 * contributes nothing. blockIdx.y picks the token: for a few tokens (decode,
 * short prompts) each weight row comes from L2 after the first token.
 *
 * The epilogue - bias, activation, residual add, K/V cache write - runs on
 * the fp32 dot product before anything is stored, so that a decode layer is
 * a handful of kernels and the activations take one trip through memory.
 */
#include "common.cuh"
#include "kernels.cuh"

#define GEMV_WARPS 8
#define GEMV_ROWS 2 /* output rows per warp */

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* The activations of cpu_activation, formula for formula. */
__device__ __forceinline__ float act_apply(float v, gptc_act act) {
    switch (act) {
    case ACT_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case ACT_GELU_ERF: return gelu_erf(v);
    case ACT_GELU_10: return fminf(fmaxf(gelu_erf(v), -10.0f), 10.0f);
    case ACT_QUICK_GELU: return v * sigmoid_f(1.702f * v);
    case ACT_RELU: return v > 0 ? v : 0;
    case ACT_RELU2: return v > 0 ? v * v : 0;
    case ACT_RELU6: return fminf(fmaxf(v, 0.0f), 6.0f);
    case ACT_LEAKY_RELU: return v >= 0 ? v : 0.01f * v;
    case ACT_SILU: return v * sigmoid_f(v);
    case ACT_TANH: return tanhf(v);
    case ACT_SIGMOID: return sigmoid_f(v);
    case ACT_MISH: return v * tanhf(softplus_f(v));
    case ACT_HARDSWISH: return v <= -3.0f ? 0.0f : v >= 3.0f ? v : v * (v + 3.0f) / 6.0f;
    case ACT_SQRT_SOFTPLUS: return sqrtf(softplus_f(v));
    case ACT_LAPLACE: return 0.5f * (1.0f + erff((v - 0.707107f) / (0.282095f * 1.4142135623730951f)));
    default: return v; /* ACT_LINEAR */
    }
}

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

template <typename T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const T *__restrict__ in, const T *__restrict__ w, int ldw, int I, int O,
                cuda_epi e) {
    extern __shared__ float4 xs4[]; /* ldw floats */
    float *xs = reinterpret_cast<float *>(xs4);
    int t = blockIdx.y;
    const T *x = in + (size_t)t * I;
    for (int i = threadIdx.x; i < ldw; i += blockDim.x) xs[i] = i < I ? to_f(x[i]) : 0.0f;
    __syncthreads();

    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int o0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    if (o0 >= O) return;
    const T *r[GEMV_ROWS];
    float acc[GEMV_ROWS];
#pragma unroll
    for (int k = 0; k < GEMV_ROWS; k++) {
        /* Rows past O are clamped (read again, never stored). */
        r[k] = w + (size_t)min(o0 + k, O - 1) * ldw;
        acc[k] = 0.0f;
    }
    int nch = ldw / 8;
#pragma unroll 2
    for (int c = lane; c < nch; c += 32) {
        float4 xa = xs4[2 * c], xb = xs4[2 * c + 1];
#pragma unroll
        for (int k = 0; k < GEMV_ROWS; k++) {
            float wv[8];
            load8(r[k] + (size_t)c * 8, wv);
            acc[k] += xa.x * wv[0] + xa.y * wv[1] + xa.z * wv[2] + xa.w * wv[3] + xb.x * wv[4] +
                      xb.y * wv[5] + xb.z * wv[6] + xb.w * wv[7];
        }
    }
#pragma unroll
    for (int k = 0; k < GEMV_ROWS; k++) acc[k] = warp_sum(acc[k]);
    if (lane == 0)
#pragma unroll
        for (int k = 0; k < GEMV_ROWS; k++)
            if (o0 + k < O) epi_store<T>(e, t, o0 + k, acc[k]);
}

cudaError_t cuda_gemv(gptc_dtype dt, const void *in, const void *w, int ldw, int T, int I, int O,
                      cuda_epi epi, cudaStream_t st) {
    const int rows = GEMV_WARPS * GEMV_ROWS;
    dim3 grid((unsigned)((O + rows - 1) / rows), (unsigned)T);
    size_t smem = (size_t)ldw * sizeof(float);
    GPTC_DISPATCH_DTYPE(dt, W,
                        gemv_kernel<W><<<grid, GEMV_WARPS * 32, smem, st>>>(
                            (const W *)in, (const W *)w, ldw, I, O, epi));
    return cudaGetLastError();
}

cudaError_t cuda_gemv_prepare(int max_ldw) {
    int bytes = max_ldw * (int)sizeof(float);
    if (bytes <= 48 * 1024) return cudaSuccess;
    cudaError_t e;
    if ((e = cudaFuncSetAttribute(gemv_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  bytes)) != cudaSuccess)
        return e;
    if ((e = cudaFuncSetAttribute(gemv_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  bytes)) != cudaSuccess)
        return e;
    return cudaFuncSetAttribute(gemv_kernel<__nv_bfloat16>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

template <typename T> __global__ void epilogue_kernel(const float *tmp, int T_, int O, cuda_epi e) {
    size_t n = (size_t)T_ * O;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        epi_store<T>(e, (int)(i / O), (int)(i % O), tmp[i]);
}

cudaError_t cuda_epilogue(gptc_dtype dt, const float *tmp, int T, int O, cuda_epi epi,
                          cudaStream_t st) {
    size_t blocks = ((size_t)T * O + 255) / 256;
    unsigned grid = (unsigned)(blocks < 65535 ? blocks : 65535);
    GPTC_DISPATCH_DTYPE(dt, W, epilogue_kernel<W><<<grid, 256, 0, st>>>(tmp, T, O, epi));
    return cudaGetLastError();
}
