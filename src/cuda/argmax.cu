/*
 * argmax.cu - the greedy pick at the end of a decode step, on the device.
 *
 * Two stages in one kernel: CUDA_ARGMAX_PARTS blocks each reduce a strided
 * share of the logits to a (value, index) pair, then the last block to
 * finish reduces the pairs. Ties go to the lowest index, as torch.argmax;
 * NaN logits are never picked. The second stage writes the token where the
 * next step's embedding reads it and advances the device position: a
 * replayed decode graph needs no host input when the caller feeds back the
 * token it was given. With a ring (host memory mapped into the device's
 * address space) the token of position p also goes to ring[p & ring_mask],
 * so that no copy of it follows the step on the stream.
 *
 * cuda_argmax_rows serves the batch engine's passes: one block per row of
 * logits, every row at once on its own SM.
 */
#include <limits.h>

#include "common.cuh"
#include "kernels.cuh"

#define ARGMAX_THREADS 256

__device__ __forceinline__ void better(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

/* Reduces each thread's (v, i) over the block; thread 0 gets the result. */
__device__ __forceinline__ void block_argmax(float &v, int &i) {
    __shared__ float sv[32];
    __shared__ int si[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    if (lane == 0) sv[warp] = v, si[warp] = i;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sv[lane] : -INFINITY;
        i = lane < nw ? si[lane] : INT_MAX;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    }
}

/* Stage one in every block, then the last block to finish (an atomic
 * ticket, which it resets) takes stage two: one kernel, not two. */
__global__ void argmax_kernel(const float *x, int n, float *pv, int32_t *pi, int *ticket, int32_t *token,
                              int32_t *pos, int32_t *ring, int ring_mask) {
    __shared__ int last;
    pdl_wait();
    pdl_trigger();
    float v = -INFINITY;
    int i = INT_MAX;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x)
        better(v, i, x[k], k);
    block_argmax(v, i);
    if (threadIdx.x == 0) {
        pv[blockIdx.x] = v, pi[blockIdx.x] = i;
        __threadfence();
        last = atomicAdd(ticket, 1) == (int)gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    v = -INFINITY;
    i = INT_MAX;
    for (int k = threadIdx.x; k < (int)gridDim.x; k += blockDim.x) better(v, i, __ldcg(pv + k), __ldcg(pi + k));
    block_argmax(v, i);
    if (threadIdx.x == 0) {
        int32_t tok = i == INT_MAX ? 0 : i, p = *pos + 1; /* all NaN: token 0 rather than garbage */
        *token = tok;
        *pos = p;
        *ticket = 0;
        if (ring) ring[p & ring_mask] = tok;
    }
}

cudaError_t cuda_argmax(const float *logits, int V, float *part_v, int32_t *part_i, int *ticket, int32_t *token,
                        int32_t *pos, int32_t *ring, int ring_mask, cudaStream_t st) {
    cudaError_t e = launch_pdl(argmax_kernel, dim3(CUDA_ARGMAX_PARTS), dim3(ARGMAX_THREADS), 0, st, logits, V,
                               part_v, part_i, ticket, token, pos, ring, ring_mask);
    return e != cudaSuccess ? e : cudaGetLastError();
}

#define ROWS_THREADS 1024

__global__ void argmax_rows_kernel(const float *logits, int V, int32_t *out) {
    const float *x = logits + (size_t)blockIdx.x * V;
    float v = -INFINITY;
    int i = INT_MAX;
    for (int k = threadIdx.x; k < V; k += blockDim.x) better(v, i, x[k], k);
    block_argmax(v, i);
    if (threadIdx.x == 0) out[blockIdx.x] = i == INT_MAX ? 0 : i;
}

cudaError_t cuda_argmax_rows(const float *logits, int V, int n_rows, int32_t *out, cudaStream_t st) {
    if (n_rows > 0) argmax_rows_kernel<<<n_rows, ROWS_THREADS, 0, st>>>(logits, V, out);
    return cudaGetLastError();
}
