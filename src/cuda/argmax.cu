/*
 * argmax.cu - the greedy pick at the end of a decode step, on the device.
 *
 * Two stages in one kernel (pick.cuh): CUDA_ARGMAX_PARTS blocks each reduce
 * a strided share of the logits to a (value, index) pair, then the last
 * block to finish reduces the pairs. Ties go to the lowest index, as
 * torch.argmax; NaN logits are never picked. The second stage writes the
 * token where the next step's embedding reads it and advances the device
 * position: a replayed decode graph needs no host input when the caller
 * feeds back the token it was given. With a ring (host memory mapped into
 * the device's address space) the token of position p also goes to
 * ring[p & ring_mask], so that no copy of it follows the step on the stream.
 * A session's greedy decode step picks inside its LM head instead, where
 * the product's kernel can (cuda_gemv_fuses); this kernel serves the rest.
 *
 * cuda_argmax_rows serves the batch engine's passes: one block per row of
 * logits, every row at once on its own SM. As a plain launch with a scalar
 * loop it cost a pass ~10 us more than now (an H200, gpt2, batch 1 to 32).
 */
#include "common.cuh"
#include "kernels.cuh"
#include "pick.cuh"

#define ARGMAX_THREADS 256

/* Each block a strided share of the logits, then pick_grid's second stage
 * in the last block to finish: one kernel, not two. */
__global__ void argmax_kernel(const float *x, int n, cuda_pick p) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_wait();
    pdl_trigger();
    float v = -INFINITY;
    int i = INT_MAX;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x)
        better(v, i, x[k], k);
    pick_grid(p, v, i, sv, si);
}

cudaError_t cuda_argmax(const float *logits, int V, cuda_pick p, cudaStream_t st) {
    cudaError_t e = launch_pdl(argmax_kernel, dim3(CUDA_ARGMAX_PARTS), dim3(ARGMAX_THREADS), 0, st, logits, V, p);
    return e != cudaSuccess ? e : cudaGetLastError();
}

#define ROWS_THREADS 1024

/* A row's logits start wherever V puts them (50257 floats a row): the
 * floats before its first 16-byte boundary one a thread, then float4s (a
 * row's ~12 loads a thread all in flight), then the tail. Launched with PDL
 * after the LM head, like the kernels before it. */
__global__ void argmax_rows_kernel(const float *logits, int V, int32_t *out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    pdl_wait();
    pdl_trigger();
    const float *x = logits + (size_t)blockIdx.x * V;
    float v = -INFINITY;
    int i = INT_MAX, t = threadIdx.x;
    int a = (int)((16 - ((uintptr_t)x & 15)) & 15) / 4;
    if (a > V) a = V;
    if (t < a) better(v, i, x[t], t);
    const float4 *x4 = reinterpret_cast<const float4 *>(x + a);
    int n4 = (V - a) / 4;
#pragma unroll 4
    for (int k = t; k < n4; k += blockDim.x) {
        float4 q = x4[k];
        int b = a + 4 * k;
        better(v, i, q.x, b);
        better(v, i, q.y, b + 1);
        better(v, i, q.z, b + 2);
        better(v, i, q.w, b + 3);
    }
    for (int k = a + 4 * n4 + t; k < V; k += blockDim.x) better(v, i, x[k], k);
    block_argmax(v, i, sv, si);
    if (t == 0) out[blockIdx.x] = i == INT_MAX ? 0 : i;
}

cudaError_t cuda_argmax_rows(const float *logits, int V, int n_rows, int32_t *out, cudaStream_t st) {
    if (n_rows <= 0) return cudaSuccess;
    cudaError_t e = launch_pdl(argmax_rows_kernel, dim3(n_rows), dim3(ROWS_THREADS), 0, st, logits, V, out);
    return e != cudaSuccess ? e : cudaGetLastError();
}
