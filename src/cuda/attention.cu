/*
 * attention.cu - causal self-attention over the K/V cache.
 *
 * One block per (head, query). The query at position p attends to cache rows
 * [0, p]; its scores (p + 1 floats) live in shared memory, so no T x T score
 * matrix is ever written to global memory. Three phases:
 *   1. scores: one warp per key row, lanes across the head dimension
 *      (coalesced reads of the row), warp-shuffle sum;
 *   2. softmax: block max, exp, block sum (max subtracted first, as the CPU
 *      reference does, so exp never overflows);
 *   3. output: thread groups of D threads each take every G-th key row and
 *      accumulate p_j * v_j, then the G partial rows are summed.
 * The position comes from device memory, so the decode step (T = 1) can be
 * replayed from a CUDA graph. Splitting long sequences across blocks
 * (flash-decoding) is the next step when decode at long context matters.
 */
#include "common.cuh"
#include "kernels.cuh"

#define ATT_THREADS 256

/* Shared memory layout, in floats: q (D), red (32), part (ATT_THREADS), scores (max_len). */
size_t cuda_attention_smem(int D, int max_len) {
    return ((size_t)D + 32 + ATT_THREADS + (size_t)max_len) * sizeof(float);
}

template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
    attention_kernel(T *out, const float *qkv, const T *kc, const T *vc, const int32_t *pos, int C,
                     int D, float scale) {
    extern __shared__ float sm[];
    float *q = sm, *red = q + D, *part = red + 32, *sc = part + ATT_THREADS;
    int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    int L = *pos + t + 1; /* causal: this position and all before it */
    size_t hoff = (size_t)h * D;

    const float *qr = qkv + (size_t)t * 3 * C + hoff;
    for (int d = tid; d < D; d += blockDim.x) q[d] = qr[d];
    __syncthreads();

    for (int j = warp; j < L; j += nw) {
        const T *kr = kc + (size_t)j * C + hoff;
        float s = 0.0f;
        for (int d = lane; d < D; d += 32) s += q[d] * to_f(kr[d]);
        s = warp_sum(s);
        if (lane == 0) sc[j] = s * scale;
    }
    __syncthreads();

    float mx = -INFINITY;
    for (int j = tid; j < L; j += blockDim.x) mx = fmaxf(mx, sc[j]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = tid; j < L; j += blockDim.x) {
        float p = expf(sc[j] - mx);
        sc[j] = p;
        sum += p;
    }
    sum = block_sum(sum, red); /* its barriers also publish the exp'ed scores */
    float inv = 1.0f / sum;

    T *orow = out + (size_t)t * C + hoff;
    if (D <= (int)blockDim.x) {
        int G = blockDim.x / D, g = tid / D, d = tid % D;
        if (g < G) {
            float acc = 0.0f;
            for (int j = g; j < L; j += G) acc += sc[j] * to_f(vc[(size_t)j * C + hoff + d]);
            part[g * D + d] = acc;
        }
        __syncthreads();
        if (tid < D) {
            float a = 0.0f;
            for (int k = 0; k < G; k++) a += part[k * D + tid];
            orow[tid] = from_f<T>(a * inv);
        }
    } else {
        for (int d = tid; d < D; d += blockDim.x) {
            float acc = 0.0f;
            for (int j = 0; j < L; j++) acc += sc[j] * to_f(vc[(size_t)j * C + hoff + d]);
            orow[d] = from_f<T>(acc * inv);
        }
    }
}

cudaError_t cuda_attention(gptc_dtype dt, void *out, const float *qkv, const void *k_cache,
                           const void *v_cache, const int32_t *pos, int T, int C, int NH,
                           int max_len, float scale, cudaStream_t st) {
    int D = C / NH;
    size_t smem = cuda_attention_smem(D, max_len);
    dim3 grid((unsigned)NH, (unsigned)T);
    GPTC_DISPATCH_DTYPE(dt, W,
                        attention_kernel<W><<<grid, ATT_THREADS, smem, st>>>(
                            (W *)out, qkv, (const W *)k_cache, (const W *)v_cache, pos, C, D,
                            scale));
    return cudaGetLastError();
}

cudaError_t cuda_attention_prepare(int D, int max_len) {
    size_t bytes = cuda_attention_smem(D, max_len);
    if (bytes <= 48 * 1024) return cudaSuccess;
    cudaError_t e;
    if ((e = cudaFuncSetAttribute(attention_kernel<float>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes)) !=
        cudaSuccess)
        return e;
    if ((e = cudaFuncSetAttribute(attention_kernel<__half>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes)) !=
        cudaSuccess)
        return e;
    return cudaFuncSetAttribute(attention_kernel<__nv_bfloat16>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}
