/*
 * pick.cuh - the greedy pick's order and its two-stage reduction over a grid,
 * shared by the argmax kernel and the LM head's product (which picks while
 * it stores the logits, so that a greedy decode step ends one kernel
 * earlier).
 *
 * Every block reduces its candidates to a (value, index) pair, writes it to
 * cuda_pick.part_v / part_i at its block index, and takes a ticket; the last
 * block reduces the pairs, writes the token, advances the position and
 * resets the ticket. The order is total - the larger value, the lower index
 * on ties, NaN never picked - so where a value was looked at changes no pick.
 */
#ifndef GPTC_CUDA_PICK_CUH
#define GPTC_CUDA_PICK_CUH

#include <limits.h>

#include "kernels.cuh"

/* torch.argmax's pick: the larger value, the lower index on ties. */
__device__ __forceinline__ void better(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

/* Reduces each thread's (v, i) over the block; thread 0 gets the result.
 * sv / si: a float and an int a warp of shared memory, which the caller
 * leaves alone until a barrier after this returns. */
__device__ __forceinline__ void block_argmax(float &v, int &i, float *sv, int *si) {
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

/* The grid's pick from every thread's (v, i): called by all threads of every
 * block, after the last use of sv / si (a barrier between). */
__device__ __forceinline__ void pick_grid(const cuda_pick &p, float v, int i, float *sv, int *si) {
    int nb = (int)(gridDim.x * gridDim.y), b = (int)(blockIdx.y * gridDim.x + blockIdx.x);
    block_argmax(v, i, sv, si);
    __syncthreads(); /* warp 0 has read sv / si */
    if (threadIdx.x == 0) {
        p.part_v[b] = v, p.part_i[b] = i;
        __threadfence();
        si[0] = atomicAdd(p.ticket, 1) == nb - 1;
    }
    __syncthreads();
    int last = si[0];
    __syncthreads(); /* si is block_argmax's again */
    if (!last) return;
    __threadfence();
    v = -INFINITY;
    i = INT_MAX;
    for (int k = threadIdx.x; k < nb; k += blockDim.x) better(v, i, __ldcg(p.part_v + k), __ldcg(p.part_i + k));
    block_argmax(v, i, sv, si);
    if (threadIdx.x == 0) {
        int32_t tok = i == INT_MAX ? 0 : i; /* all NaN: token 0 rather than garbage */
        *p.token = tok;
        if (p.pos) {
            int32_t q = *p.pos + 1;
            *p.pos = q;
            if (p.ring) p.ring[q & p.ring_mask] = tok;
        }
        *p.ticket = 0;
    }
}

#endif
