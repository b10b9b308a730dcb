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
 * ln_stage_kernel, once per token, rather than from every block - or, for a
 * few short rows a block, by gemv_pipe_ln_kernel itself, a warp a token.
 * That is the fp32 path; fp16 and bf16 take gemv_mma_kernel, which reads
 * each weight once for up to 32 tokens and multiplies on tensor cores
 * (gpt2-xl at batch 32 on an H100: 15.5 -> 5.0 ms per decode step), the
 * CUDA-core kernels staying behind GPTC_GEMV_MMA=0; passes of 2-32 tokens
 * take gemv_pipe_kernel, the same sums with the weights streamed through
 * shared memory, or where a block cannot stage their rows (gpt2-xl's MLP
 * projection from 12 tokens) gemv_ksplit_kernel, the same sums with each
 * row's steps split over a cluster of 4 blocks.
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <atomic>
#include <type_traits>

#include "act.cuh"
#include "common.cuh"
#include "kernels.cuh"
#include "pick.cuh"

#define GEMV_WARPS 4 /* one output row per warp; small blocks so every SM gets several */

/* Token t's row of the K/V cache, in elements (EPI_QKV). */
__device__ __forceinline__ size_t kv_cache_row(const cuda_epi &e, int t) {
    return (e.rows ? (size_t)e.rows[t] : (size_t)(*e.pos + t)) * e.C;
}

template <typename T>
__device__ __forceinline__ void epi_store(const cuda_epi &e, int t, int o, float v) {
    if (e.bias) v += e.bias[o];
    size_t idx = (size_t)t * e.ldo + o;
    switch (e.mode) {
    case EPI_QKV:
        ((float *)e.out)[idx] = v;
        if (o >= e.C) {
            size_t row = kv_cache_row(e, t);
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
template <typename G4, typename G1>
__device__ __forceinline__ void ln_stage_from(G4 get4, G1 get1, float *xs, float4 *xs4, int I, float eps, float *red,
                                              float &mean, float &rstd) {
    int nthr = blockDim.x;
    float sum = 0.0f;
    if ((I & 3) == 0) {
        for (int i = threadIdx.x * 4; i < I; i += nthr * 4) {
            float4 v = get4(i);
            xs4[i >> 2] = v;
            sum += (v.x + v.y) + (v.z + v.w);
        }
    } else {
        for (int i = threadIdx.x; i < I; i += nthr) sum += (xs[i] = get1(i));
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
__device__ __forceinline__ void ln_stage_row(const float *__restrict__ x, float *xs, float4 *xs4, int I,
                                             float eps, float *red, float &mean, float &rstd) {
    ln_stage_from([&](int i) { return __ldg(reinterpret_cast<const float4 *>(x + i)); }, [&](int i) { return x[i]; },
                  xs, xs4, I, eps, red, mean, rstd);
}
/* The same for a row that is the embedding of token *ids at position *pos
 * (cuda_embed_src): cuda_embed's sums, so the same values; the grid's first
 * block also writes them to the residual stream. */
template <typename T>
__device__ __forceinline__ void ln_stage_embed(const cuda_embed_src &m, float *xs, float4 *xs4, int I, float eps,
                                               float *red, float &mean, float &rstd) {
    const T *te = reinterpret_cast<const T *>(m.wte) + (size_t)*m.ids * m.ldw;
    const float *pe = m.wpe + (size_t)*m.pos * I;
    float *x = blockIdx.x == 0 && blockIdx.y == 0 ? m.x : NULL;
    ln_stage_from(
        [&](int i) {
            float4 v = make_float4(to_f(te[i]) + pe[i], to_f(te[i + 1]) + pe[i + 1], to_f(te[i + 2]) + pe[i + 2],
                                   to_f(te[i + 3]) + pe[i + 3]);
            if (x) *reinterpret_cast<float4 *>(x + i) = v;
            return v;
        },
        [&](int i) {
            float v = to_f(te[i]) + pe[i];
            if (x) x[i] = v;
            return v;
        },
        xs, xs4, I, eps, red, mean, rstd);
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
 * The products of the 16-bit dtypes on tensor cores: mma.sync m16n8k16,
 * weights as the 16 x 16 A operand, up to 8 tokens as the 16 x 8 B
 * operand, fp32 accumulators. Decode stays bound by the weight stream; what
 * the tensor cores change is the cost of a token past the first, so a block
 * takes up to GEMV_MMA_TOK tokens and reads each weight once for all of them.
 *
 * Batch invariance holds as for the CUDA-core kernel, by a different
 * argument: an output element of an mma is a function of its A row, its B
 * column and its accumulator alone, never of the other columns, so a token's
 * sums are the same in whatever column, tile or block it sits - and every
 * launch, one token or many, runs this same kernel with the same split of
 * the row over the block's warps (it depends on ldw only) and the same order
 * of the warps' partial sums. tests/gpu/test_kernels.cu checks it to the bit.
 *
 * The reduction order along a row is free as long as A and B agree on it, so
 * a lane takes whole 16-byte chunks: lane (g, q) loads 8 consecutive weights
 * of rows g and g + 8 at k = 32 s + 8 q and the same 8 inputs of token g,
 * which fill the operand slots {2q, 2q + 1, 2q + 8, 2q + 9} of two mmas.
 * The block's 8 warps take every eighth of the row's 32-element steps
 * (warp w: w, w + 8, ...); their partial sums meet in shared memory, added
 * in warp order.
 * A token's staged row is (nk | 1) * 64 bytes long, an odd number of half
 * bank lines, so the quarter-warps' 16-byte reads of two tokens never share
 * a bank.
 */
#define GEMV_MMA_TOK 32 /* tokens a block multiplies at most (4 tiles of 8) */

/* The most steps of 32 elements of a row one of a block's 8 warps takes
 * (warp w: w, w + 8, ...); the K split's octets of steps likewise. */
__host__ __device__ constexpr int mma_warp_steps(int ldw) { return (((ldw + 31) >> 5) + 7) >> 3; }

/* Bytes of one token's staged row: nk steps of 32 elements, odd in 64s. */
static __host__ __device__ __forceinline__ int mma_row_bytes(int ldw) { return (((ldw + 31) >> 5) | 1) * 64; }

/* Blocks an SM a variant is held to (its register cap): several slabs or
 * 16 loads a lane one, 2 with fewer rows a block (a lane loads one row);
 * 7 loads a lane 2 for several tiles, 4 with fewer rows; else 3. */
__host__ __device__ constexpr int mma_minb(int NTILE, int NCL, int R, int RB) {
    return R > 1 ? 1 : NCL >= 16 ? (RB < 16 ? 2 : 1) : NCL >= 7 ? (NTILE > 1 ? 2 : RB < 16 ? 4 : 3) : 3;
}

/* A block's nt tokens (rows of I elements from `in`) into shared memory,
 * a token every S bytes, zero from I to kpad. */
template <typename T>
__device__ __forceinline__ void mma_stage_tokens(char *sm, int S, const T *__restrict__ in, int nt, int I, int kpad) {
    if ((I & 7) == 0) {
        /* Asynchronous copies, all in flight at once: 32 tokens of gpt2-xl
         * are 100 KB a block, which a loop of loads and stores would fetch
         * one L2 round trip per iteration. Chunks past I are zero-filled. */
        int n8 = I >> 3, k8 = kpad >> 3;
        for (int u = threadIdx.x; u < nt * k8; u += blockDim.x) {
            int j = u / k8, c = u - j * k8;
            cp_async16(sm + (size_t)j * S + c * 16, in + (size_t)j * I + (size_t)min(c, n8 - 1) * 8, c < n8 ? 16 : 0);
        }
        cp_async_wait_all();
    } else {
        for (int u = threadIdx.x; u < nt * kpad; u += blockDim.x) {
            int j = u / kpad, i = u - j * kpad;
            reinterpret_cast<T *>(sm + (size_t)j * S)[i] = i < I ? in[(size_t)j * I + i] : from_f<T>(0.0f);
        }
    }
}

/* The place of (row orow, token c) of a 16 x 8 mma accumulator among its
 * 32 lanes x 4 floats: lane (g, q) holds rows g and g + 8 of tokens 2q,
 * 2q + 1. */
__device__ __forceinline__ int mma_frag_index(int orow, int c) {
    return (((orow & 7) * 4 + (c >> 1)) << 2) + ((orow >> 3) << 1) + (c & 1);
}

/* A row block's outputs from the 8 warps' partial sums (a float4 a lane of
 * each warp and tile, after a barrier), added in warp order by the thread
 * of each (row, token): lane (g, q) holds rows g and g + 8 of tokens 2q,
 * 2q + 1. Rows ob.. of tokens t0..; `bb` is the thread's row's bias. */
template <typename T, int NTILE, int RB>
__device__ __forceinline__ void mma_epilogue(const float *pf, const cuda_epi &e, int tid, int nt, int t0, int ob,
                                             int O, float bb, float *pv = NULL, int *pi = NULL) {
    /* the epilogue's copy, so that the parameters stay out of registers
     * until here (the bias is already in `bb`) */
    cuda_epi ee = e;
    ee.bias = NULL;
    int orow = tid & 15;
    for (int i = tid; i < 16 * nt; i += 256) {
        int n = i >> 4, j = n >> 3, c = n & 7;
        int src = mma_frag_index(orow, c);
        float v = pf[(size_t)j * 128 + src];
#pragma unroll
        for (int u = 1; u < 8; u++) v += pf[(size_t)(u * NTILE + j) * 128 + src];
        if (orow < RB && ob + orow < O) {
            epi_store<T>(ee, t0 + n, ob + orow, v + bb);
            /* the pick (one token): this thread's best of the values it stored */
            if (pv) better(pv[tid], pi[tid], v + bb, ob + orow);
        }
    }
}

/* A one-token block's weights past its first round of loads (steps NCL ..
 * 2 NCL - 1 of its warp), which the loop would request only after the first
 * round's mmas, copied into shared memory before the PDL wait (TAIL): every
 * byte of the block's first row block is then in flight while the previous
 * kernel finishes. A thread reads back only what it copied itself: slot
 * (2 k + h) x 256 + tid (blocks of RB < 16 rows: k x 256 + tid, row g
 * only), consecutive threads on consecutive 16 bytes. */
__host__ __device__ constexpr int mma_tail_steps(int ldw, int NCL) {
    int steps = mma_warp_steps(ldw);
    return steps <= NCL ? 0 : steps - NCL < NCL ? steps - NCL : NCL;
}
static __host__ __device__ size_t mma_tail_bytes(int ldw, int NCL, int RB) {
    return (size_t)mma_tail_steps(ldw, NCL) * (RB == 16 ? 2 : 1) * 256 * 16;
}

/* The kernel's body: gemv_mma_kernel, and with FUSE gemv_mma_fused_kernel
 * (one token; fz: the pick of the logits, or the embedding as the input). */
template <typename T, bool LN, int NTILE, int NCL, int R, int RB, bool TAIL, bool FUSE>
__device__ __forceinline__ void gemv_mma_body(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I,
                                              int O, int n_tok, int tpb, const cuda_epi &e,
                                              const float *__restrict__ ln_w, const float *__restrict__ ln_b,
                                              float eps, const cuda_fuse *fz) {
    static_assert(sizeof(T) == 2, "tensor cores take the 16-bit dtypes");
    static_assert(!LN || R == 1, "the fused layer norm's sums are those of a 256-thread block");
    static_assert(RB == 16 || (R == 1 && (RB == 8 || RB == 4)), "a block of fewer rows has one slab");
    extern __shared__ float4 sm4[]; /* staged rows (LN: one, then xs, ln_w, ln_b), the partial sums */
    __shared__ float red[32];
    char *sm = reinterpret_cast<char *>(sm4);
    int nk = (ldw + 31) >> 5, S = mma_row_bytes(ldw), nch = ldw >> 3;
    /* R slabs of 16 rows, 8 warps each, share the staged tokens: a slab's
     * warps split a row as a block of one slab does, so R changes no sum. */
    int slab = R > 1 ? threadIdx.x >> 8 : 0, tid = R > 1 ? threadIdx.x & 255 : threadIdx.x;
    int t0 = blockIdx.x * tpb, nt = min(tpb, n_tok - t0);
    int warp = tid >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    /* This warp's steps: warp, warp + 8, ... (the block's 8 warps read 512
     * contiguous bytes of each row at a time). */
    int ns = nk > warp ? (nk - warp + 7) >> 3 : 0;
    /* The block takes row blocks blockIdx.y, + gridDim.y, ... of nrb (a
     * grid of fewer blocks than row blocks: launch_rows), staging its tokens
     * once for all of them. Rows past O are clamped (read, never stored). A
     * block of RB < 16 rows leaves the A rows from RB on zero and never
     * loads them: an mma's output row is a function of its own A row, B
     * column and accumulator, so the rows it keeps get the bits a block of
     * 16 gives them. */
    /* The epilogue's thread keeps one row (a slab's 256 threads). */
    int orow = tid & 15;
    int nrb = (O + R * RB - 1) / (R * RB), rbk = blockIdx.y, o0 = 0;
    float bias = 0.0f;
    auto rows = [&](int b) {
        o0 = (b * R + slab) * RB;
        bias = e.bias && orow < RB && o0 + orow < O ? __ldg(e.bias + o0 + orow) : 0.0f;
    };
    rows(rbk);
    bool has0 = RB > 8 || g < RB;
    uint4 wa[NCL], wb[NCL];
    auto load = [&](int i, bool pre) {
        const T *r0 = w + (size_t)min(o0 + g, O - 1) * ldw, *r1 = w + (size_t)min(o0 + g + 8, O - 1) * ldw;
#pragma unroll
        for (int k = 0; k < NCL; k++) {
            int c = (warp + 8 * (i + k)) * 4 + q;
            if (i + k < ns && c < nch) {
                const uint4 *p0 = reinterpret_cast<const uint4 *>(r0 + (size_t)c * 8);
                const uint4 *p1 = reinterpret_cast<const uint4 *>(r1 + (size_t)c * 8);
                wa[k] = has0 ? (pre ? ld_before_wait(p0) : __ldg(p0)) : make_uint4(0, 0, 0, 0);
                wb[k] = RB == 16 ? (pre ? ld_before_wait(p1) : __ldg(p1)) : make_uint4(0, 0, 0, 0);
            } else {
                wa[k] = wb[k] = make_uint4(0, 0, 0, 0);
            }
        }
    };
    /* Parameters never change: the first weights in flight before waiting
     * on the previous kernel. */
    load(0, true);
    /* The tail's room, after the partial sums (see the launcher's smem). */
    static_assert(!TAIL || (NTILE == 1 && R == 1), "the tail is one token's");
    size_t part_at = LN ? S + 12 * (size_t)ldw : (size_t)min(tpb, n_tok) * S;
    uint4 *tail = reinterpret_cast<uint4 *>(sm + part_at + 8 * 32 * sizeof(float4));
    int ntail = TAIL ? mma_tail_steps(ldw, NCL) : 0;
    if (TAIL) {
        const T *r0 = w + (size_t)min(o0 + g, O - 1) * ldw, *r1 = w + (size_t)min(o0 + g + 8, O - 1) * ldw;
        for (int k = 0; k < ntail; k++) {
            int c = (warp + 8 * (NCL + k)) * 4 + q;
            bool ok = NCL + k < ns && c < nch;
            int cc = ok ? c : 0;
            cp_async16(tail + (RB == 16 ? 2 * k : k) * 256 + tid, r0 + (size_t)cc * 8, ok && has0 ? 16 : 0);
            if (RB == 16) cp_async16(tail + (2 * k + 1) * 256 + tid, r1 + (size_t)cc * 8, ok ? 16 : 0);
        }
    }
    float *xs = reinterpret_cast<float *>(sm + S), *lw = xs + ldw, *lb = lw + ldw;
    if (LN)
        for (int i = threadIdx.x; i < I; i += blockDim.x) lw[i] = __ldg(ln_w + i), lb[i] = __ldg(ln_b + i);
    pdl_wait();
    pdl_trigger();
    int kpad = nk * 32; /* staged elements per token; zeros from I on */
    if (LN) {
        /* One token (tpb = 1): ln_stage_kernel's sums and rounding, so a
         * row normalised here or there is the same bytes. */
        float mean, rstd;
        if (FUSE && fz->emb.wte)
            ln_stage_embed<T>(fz->emb, xs, reinterpret_cast<float4 *>(xs), I, eps, red, mean, rstd);
        else
            ln_stage_row((const float *)in_ + (size_t)t0 * I, xs, reinterpret_cast<float4 *>(xs), I, eps, red,
                         mean, rstd);
        T *xh = reinterpret_cast<T *>(sm);
        for (int i = threadIdx.x; i < kpad; i += blockDim.x)
            xh[i] = i < I ? from_f<T>((xs[i] - mean) * rstd * lw[i] + lb[i]) : from_f<T>(0.0f);
    } else {
        mma_stage_tokens<T>(sm, S, (const T *)in_ + (size_t)t0 * I, nt, I, kpad);
    }
    __syncthreads();
    /* The pick (cuda_fuse): each epilogue thread's best so far, in `red`
     * (the layer norm is done with it). */
    static_assert(!FUSE || (NTILE == 1 && R == 1), "the fused kernels are one token's");
    float *pv = FUSE && fz->pick.ticket ? red : NULL;
    int *pi = reinterpret_cast<int *>(red) + 16;
    if (FUSE && pv && tid < 16) pv[tid] = -INFINITY, pi[tid] = INT_MAX;
    /* The partial sums' room, after the staged rows. */
    float4 *part = reinterpret_cast<float4 *>(sm + part_at) + slab * 8 * NTILE * 32;
    for (;;) {
        float acc[NTILE][4];
#pragma unroll
        for (int j = 0; j < NTILE; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
        /* NCL steps' loads in flight, then their mmas (interleaving the two,
         * a ring of slots refilled as they are used, measured slower). */
        for (int i = 0; i < ns; i += NCL) {
            if (TAIL && i == NCL && ntail) {
                /* this thread's own copies: waiting makes them visible to it */
                cp_async_wait_all();
#pragma unroll
                for (int k = 0; k < NCL; k++) {
                    wa[k] = k < ntail ? tail[(RB == 16 ? 2 * k : k) * 256 + tid] : make_uint4(0, 0, 0, 0);
                    wb[k] = RB == 16 && k < ntail ? tail[(2 * k + 1) * 256 + tid] : make_uint4(0, 0, 0, 0);
                }
            } else if (i) {
                load(i, false);
            }
#pragma unroll
            for (int k = 0; k < NCL; k++) {
                if (i + k >= ns) break;
                int off = (warp + 8 * (i + k)) * 64 + q * 16;
#pragma unroll
                for (int j = 0; j < NTILE; j++) {
                    int n = j * 8 + g;
                    uint4 xb = n < nt ? *reinterpret_cast<const uint4 *>(sm + (size_t)n * S + off) : make_uint4(0, 0, 0, 0);
                    mma16816<T>(acc[j], wa[k].x, wb[k].x, wa[k].y, wb[k].y, xb.x, xb.y);
                    mma16816<T>(acc[j], wa[k].z, wb[k].z, wa[k].w, wb[k].w, xb.z, xb.w);
                }
            }
        }
        /* The warps' partial sums, added in warp order by the thread of each
         * (row, token): lane (g, q) holds rows g and g + 8 of tokens 2q, 2q + 1.
         * They have room of their own after the staged rows: one barrier. */
#pragma unroll
        for (int j = 0; j < NTILE; j++)
            part[(warp * NTILE + j) * 32 + lane] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
        __syncthreads();
        /* The next row block's first weights in flight over this one's epilogue. */
        int ob = o0;
        float bb = bias;
        rbk += gridDim.y;
        ntail = 0; /* the tail was the first row block's */
        if (rbk < nrb) rows(rbk), load(0, false);
        if (FUSE) mma_epilogue<T, NTILE, RB>(reinterpret_cast<const float *>(part), e, tid, nt, t0, ob, O, bb, pv, pi);
        else mma_epilogue<T, NTILE, RB>(reinterpret_cast<const float *>(part), e, tid, nt, t0, ob, O, bb);
        if (rbk >= nrb) break;
        __syncthreads(); /* part is the next row block's */
    }
    if (FUSE && pv) {
        /* the logits of this block's rows are stored: the grid's pick */
        __syncthreads();
        float v = tid < 16 ? pv[tid] : -INFINITY;
        int i = tid < 16 ? pi[tid] : INT_MAX;
        __syncthreads();
        pick_grid(fz->pick, v, i, red, pi);
    }
}

template <typename T, bool LN, int NTILE, int NCL, int R, int RB = 16, int MINB = mma_minb(NTILE, NCL, R, RB),
          bool TAIL = false>
__global__ void __launch_bounds__(256 * R, MINB)
    gemv_mma_kernel(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I, int O,
                    int n_tok, int tpb, cuda_epi e, const float *__restrict__ ln_w,
                    const float *__restrict__ ln_b, float eps) {
    gemv_mma_body<T, LN, NTILE, NCL, R, RB, TAIL, false>(in_, w, ldw, I, O, n_tok, tpb, e, ln_w, ln_b, eps, NULL);
}

/* One token's product that also picks the token from its logits or takes
 * the embedding as its input (cuda_fuse): kernels of their own, so that the
 * others keep their parameters and code (run-time checks and the larger
 * parameters in gemv_mma_kernel itself made every product slower: gpt2-xl
 * 1.566 -> 1.618 ms/token on an H200, with both fusions off). */
template <typename T, bool LN, int NCL, int RB, int MINB, bool TAIL>
__global__ void __launch_bounds__(256, MINB)
    gemv_mma_fused_kernel(const void *__restrict__ in_, const T *__restrict__ w, int ldw, int I, int O, int n_tok,
                          int tpb, cuda_epi e, const float *__restrict__ ln_w, const float *__restrict__ ln_b,
                          float eps, cuda_fuse f) {
    gemv_mma_body<T, LN, 1, NCL, 1, RB, TAIL, true>(in_, w, ldw, I, O, n_tok, tpb, e, ln_w, ln_b, eps, &f);
}

/*
 * The tensor-core product of a few tokens with the weights streamed through
 * shared memory (gemv_pipe_kernel). gemv_mma_kernel holds a row block's
 * loads in registers and issues the next batch only after its mmas, its
 * barrier and its epilogue, so a block's loads come in bursts. Here one
 * block an SM stages its tokens once and keeps PIPE_BYTES of weights in
 * flight with cp.async whatever its warps are doing: a unit is RB rows x 8
 * SPW steps of 32 elements, the units of a slab's row blocks one stream, a
 * stage refilled as soon as the slab's 8 warps are done with it. Two slabs
 * of 8 warps a block, each its own row blocks and stages: with 8 warps an
 * SM the mmas' latency was not hidden (ncu: a warp issuing every 5 cycles,
 * the products below gemv_mma_kernel's speed at 32 tokens).
 * H100, device ms a decode step at 128 + 64 tokens, gemv_mma_kernel ->
 * this: gpt2 batch 4 0.358 -> 0.351, 8 0.371 -> 0.349, 32 0.545 -> 0.520
 * (16 tokens a block; 32 a block: 0.529); gpt2-xl 4 2.365 -> 2.133, 8 2.75
 * -> 2.27, 16 3.13 -> 3.06, 32 unchanged (3.97; 32 a block 4.07); batch 128
 * 1.10 -> 1.15 and 9.6 -> 10.6 (so not there: GPTC_GEMV_PIPE).
 *
 * The sums are gemv_mma_kernel's: warp w takes steps 8 k + w of a unit
 * (k < SPW), so steps w, w + 8, ... of each row in order, on the same
 * mmas of the same operand slots (zero-padded steps included), and the
 * partials add in warp order (mma_epilogue) - a token's outputs are bitwise
 * those of a launch of T = 1 (tests/gpu/test_kernels.cu, "= alone").
 * A unit's 16-byte chunk ci of row r lies at ci ^ 4 (r & 1) in the row's
 * bytes, so the 8 lanes of a quarter-warp (rows 2p, 2p + 1, chunks 4 s ..
 * 4 s + 3 of one step) read 8 distinct bank groups.
 */
#define PIPE_BYTES (64 * 1024) /* weights in flight a block */
#define PIPE_BYTES_BIG (96 * 1024) /* with units of 2 steps a warp in two slabs (gemv_pipe_launch) */

/* A slab's named barrier (ids 1, 2; 0 is __syncthreads'). */
__device__ __forceinline__ void slab_sync(int slab) { asm volatile("bar.sync %0, 256;" ::"r"(slab + 1) : "memory"); }

/*
 * ln_stage_row's statistics of a row one warp holds in registers - lane l's
 * v[k] is float4 l + 32 k of the row (I a multiple of 4, at most 128 NV) -
 * in the 256-thread block's order, so the same bits: block thread
 * t = 32 w + l sums float4s t, t + 256, ... (this lane's v[w], v[w + 8]),
 * then the elements t, t + 256, ... of the variance, which lie in the lanes
 * 8 (w % 4) + l / 4 (component l % 4, v[w / 4], v[w / 4 + 2], ...): each
 * lane takes those of its own, eight partials (two virtual warps x four
 * components), and block_sum's butterfly over a virtual warp's 32 threads
 * is three lane levels (thread bits 4, 3, 2: lane bits 2, 1, 0) and two
 * component levels. Each butterfly level adds the same pairs of values
 * whichever lane adds them, so a lane keeps half of its values at each
 * level and receives its partner's half (ln_halve): the eight sums of a
 * pass take 7 shuffles, not 8 x 5, and end one a lane group. Then
 * block_sum's second step, the eight warps' sums in lanes 0-7 of one more
 * butterfly.
 */
template <int N>
__device__ __forceinline__ void ln_halve(const float (&a)[2 * N], float (&b)[N], bool hi, int o) {
#pragma unroll
    for (int i = 0; i < N; i++) {
        float keep = hi ? a[i + N] : a[i], give = hi ? a[i] : a[i + N];
        b[i] = keep + __shfl_xor_sync(0xffffffffu, give, o);
    }
}
template <int NV>
__device__ __forceinline__ void ln_stats_regs(const float4 (&v)[NV], int I, float eps, float &mean, float &rstd) {
    static_assert(NV % 8 == 0, "two virtual warps a lane: k = w / 4 + 2 m");
    int lane = threadIdx.x & 31, n4 = I >> 2;
    float p[8], p4[4], p2[2], p1[1];
#pragma unroll
    for (int w = 0; w < 8; w++) {
        p[w] = 0.0f;
#pragma unroll
        for (int k = w; k < NV; k += 8)
            if (lane + 32 * k < n4) p[w] += (v[k].x + v[k].y) + (v[k].z + v[k].w);
    }
    /* thread bits 4, 3, 2 (lane bits 4, 3, 2): virtual warp w = lane / 4 % 8
     * left here, then bits 1, 0 as block_sum */
    ln_halve<4>(p, p4, lane & 16, 16);
    ln_halve<2>(p4, p2, lane & 8, 8);
    ln_halve<1>(p2, p1, lane & 4, 4);
    float s = p1[0];
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s = __shfl_sync(0xffffffffu, s, (lane & 7) * 4);
    mean = warp_sum(lane < 8 ? s : 0.0f) / (float)I;
    float q[8]; /* [h * 4 + c]: virtual warp lane / 8 + 4 h, component c */
#pragma unroll
    for (int u = 0; u < 8; u++) q[u] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int k = h; k < NV; k += 2)
            if (lane + 32 * k < n4) {
                float d;
                d = v[k].x - mean, q[h * 4 + 0] += d * d;
                d = v[k].y - mean, q[h * 4 + 1] += d * d;
                d = v[k].z - mean, q[h * 4 + 2] += d * d;
                d = v[k].w - mean, q[h * 4 + 3] += d * d;
            }
    /* thread bits 4, 3, 2 (lane bits 2, 1, 0): (h, component) = (lane / 4 %
     * 2, lane % 4) left here; then the components' levels, thread bits 1, 0,
     * across lanes 2 and 1 apart */
    ln_halve<4>(q, p4, lane & 4, 4);
    ln_halve<2>(p4, p2, lane & 2, 2);
    ln_halve<1>(p2, p1, lane & 1, 1);
    s = p1[0];
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    /* virtual warp w (lane w < 8): lane group w % 4, h = w / 4 */
    s = __shfl_sync(0xffffffffu, s, (lane & 3) * 8 + (lane & 4));
    float var = warp_sum(lane < 8 ? s : 0.0f) / (float)I;
    rstd = 1.0f / sqrtf(var + eps);
}

/* gemv_pipe_ln_kernel's layer norm: the fp32 residual rows and the
 * parameters. */
struct pipe_ln {
    const float *x, *w, *b;
    float eps;
};
#define PIPE_LN_NV 16 /* float4s a lane holds of a row: rows of up to 2048 */

template <typename T, int NTILE, int RB, int SLABS, bool BIG, bool LNX>
__device__ __forceinline__ void gemv_pipe_body(const T *__restrict__ in, const T *__restrict__ w, int ldw, int I,
                                               int O, int n_tok, int tpb, cuda_epi e, const pipe_ln &ln) {
    static_assert(RB == 16 || RB == 8, "a unit's rows: 16, or 8 with the mma's upper rows zero");
    /* SPW: steps a warp takes from a unit; RCH: a unit row's 16-byte chunks;
     * CPT: the copies a thread issues a unit. */
    constexpr int SPW = SLABS == 1 || BIG ? 2 : 1, RCH = 32 * SPW, UNIT = RB * RCH * 16;
    constexpr int BYTES = BIG ? PIPE_BYTES_BIG : PIPE_BYTES, STAGES = BYTES / SLABS / UNIT, CPT = RB * RCH / 256;
    static_assert(SLABS * STAGES * UNIT == BYTES, "gemv_pipe_launch sizes the stages as BYTES");
    static_assert(STAGES >= 3, "a stage being filled, one being read, one in flight at least");
    extern __shared__ float4 sm4[];
    char *sm = reinterpret_cast<char *>(sm4);
    int nk = (ldw + 31) >> 5, S = mma_row_bytes(ldw), nch = ldw >> 3, nu = (nk + 8 * SPW - 1) / (8 * SPW);
    int t0 = blockIdx.x * tpb, nt = min(tpb, n_tok - t0);
    /* SLABS groups of 8 warps, each its own stream of row blocks and its
     * own stages, sharing the staged tokens (more warps an SM to hide the
     * mmas' latency where a unit multiplies several tiles of tokens). */
    int slab = SLABS > 1 ? threadIdx.x >> 8 : 0, tid = threadIdx.x & 255;
    int warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
    int nrb = (O + RB - 1) / RB, by = blockIdx.y * SLABS + slab, gy = gridDim.y * SLABS;
    int nv = nrb > by ? (nrb - by + gy - 1) / gy * nu : 0; /* units of row blocks by, by + gy, ... */
    /* the staged tokens, then the slabs' stages, then their partial sums */
    char *stages = sm + (size_t)min(tpb, n_tok) * S, *ws = stages + (size_t)slab * STAGES * UNIT;
    float4 *part = reinterpret_cast<float4 *>(stages + (size_t)SLABS * STAGES * UNIT) + slab * 8 * NTILE * 32;
    /* LNX: the layer norm's weights and biases (I each), after every slab's partial sums */
    [[maybe_unused]] float *lw = reinterpret_cast<float *>(part + (SLABS - slab) * 8 * NTILE * 32), *lb = lw + I;
    /* The issuing position (row block's first row, unit within it, stage),
     * advanced a unit at a time. Always a group, empty past the end, so
     * that the waits count alike. A warp's copy is 512 bytes of one row. */
    int i_o0 = by * RB, i_u = 0, i_st = 0, issued = 0;
    auto issue = [&]() {
        if (issued < nv) {
            char *dst = ws + i_st * UNIT;
#pragma unroll
            for (int h = 0; h < CPT; h++) {
                int idx = tid + h * 256, r = idx / RCH, ci = idx % RCH, c = i_u * RCH + ci;
                const T *src = w + (size_t)min(i_o0 + r, O - 1) * ldw + (size_t)min(c, nch - 1) * 8;
                cp_async16(dst + r * (RCH * 16) + ((ci ^ ((r & 1) << 2)) << 4), src, c < nch ? 16 : 0);
            }
            issued++;
            if (++i_u == nu) i_u = 0, i_o0 += gy * RB;
            if (++i_st == STAGES) i_st = 0;
        }
        cp_async_commit();
    };
    /* LNX: the layer norm's parameters first, a group of their own, so that
     * waiting for them leaves the weights in flight. */
    if constexpr (LNX) {
        for (int c = threadIdx.x; c < (I >> 2); c += blockDim.x) {
            cp_async16(lw + 4 * c, ln.w + 4 * c, 16);
            cp_async16(lb + 4 * c, ln.b + 4 * c, 16);
        }
        cp_async_commit();
    }
    /* Parameters never change: the first stages in flight before waiting on
     * the previous kernel. */
    for (int v = 0; v < STAGES - 1; v++) issue();
    if constexpr (LNX) {
        /* A warp a token: its row into registers, every load in flight at
         * once, ln_stage_row's statistics (ln_stats_regs), ln_stage_kernel's
         * rounding into the token's staged row. */
        int n4 = I >> 2, kpad = nk * 32;
        pdl_wait();
        pdl_trigger();
        float4 v[PIPE_LN_NV];
        auto load = [&](int j) {
            const float4 *xr = reinterpret_cast<const float4 *>(ln.x + (size_t)(t0 + j) * I);
#pragma unroll
            for (int k = 0; k < PIPE_LN_NV; k++)
                if (lane + 32 * k < n4) v[k] = __ldg(xr + lane + 32 * k);
        };
        int j0 = threadIdx.x >> 5;
        if (j0 < nt) load(j0);
        cp_async_wait<STAGES - 1>(); /* the parameters, the first rows' loads in flight */
        __syncthreads();
        for (int j = j0; j < nt; j += SLABS * 8) {
            if (j != j0) load(j);
            float mean, rstd;
            ln_stats_regs(v, I, ln.eps, mean, rstd);
            T *o = reinterpret_cast<T *>(sm + (size_t)j * S);
#pragma unroll
            for (int k = 0; k < PIPE_LN_NV; k++) {
                int f = lane + 32 * k;
                if (f < n4) {
                    float4 a = v[k], w4 = reinterpret_cast<const float4 *>(lw)[f],
                           b4 = reinterpret_cast<const float4 *>(lb)[f];
                    store4(o + 4 * f, (a.x - mean) * rstd * w4.x + b4.x, (a.y - mean) * rstd * w4.y + b4.y,
                           (a.z - mean) * rstd * w4.z + b4.z, (a.w - mean) * rstd * w4.w + b4.w);
                }
            }
            for (int i = I + lane; i < kpad; i += 32) o[i] = from_f<T>(0.0f);
        }
        __syncthreads();
    } else {
        pdl_wait();
        pdl_trigger();
        mma_stage_tokens<T>(sm, S, in + (size_t)t0 * I, nt, I, nk * 32); /* waits for every copy so far */
        __syncthreads();
    }
    float acc[NTILE][4];
#pragma unroll
    for (int j = 0; j < NTILE; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    int c_o0 = by * RB, c_u = 0, c_st = 0;
    for (int v = 0; v < nv; v++) {
        cp_async_wait<STAGES - 2>();
        slab_sync(slab); /* unit v is here for the slab; unit v - 1's stage is free */
        issue();
        const char *st = ws + c_st * UNIT;
#pragma unroll
        for (int k = 0; k < SPW; k++) {
            int step = (c_u * SPW + k) * 8 + warp;
            if (step >= nk) break;
            int ci = (k * 8 + warp) * 4 + q, off_w = g * (RCH * 16) + ((ci ^ ((g & 1) << 2)) << 4);
            uint4 wa = *reinterpret_cast<const uint4 *>(st + off_w);
            uint4 wb = make_uint4(0, 0, 0, 0);
            if (RB == 16) wb = *reinterpret_cast<const uint4 *>(st + 8 * (RCH * 16) + off_w);
            int off = step * 64 + q * 16;
#pragma unroll
            for (int j = 0; j < NTILE; j++) {
                int n = j * 8 + g;
                uint4 xb = n < nt ? *reinterpret_cast<const uint4 *>(sm + (size_t)n * S + off) : make_uint4(0, 0, 0, 0);
                mma16816<T>(acc[j], wa.x, wb.x, wa.y, wb.y, xb.x, xb.y);
                mma16816<T>(acc[j], wa.z, wb.z, wa.w, wb.w, xb.z, xb.w);
            }
        }
        if (++c_st == STAGES) c_st = 0;
        if (++c_u == nu) {
#pragma unroll
            for (int j = 0; j < NTILE; j++) {
                part[(warp * NTILE + j) * 32 + lane] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
                acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
            }
            slab_sync(slab);
            int orow = tid & 15;
            float bb = e.bias && orow < RB && c_o0 + orow < O ? __ldg(e.bias + c_o0 + orow) : 0.0f;
            mma_epilogue<T, NTILE, RB>(reinterpret_cast<const float *>(part), e, tid, nt, t0, c_o0, O, bb);
            /* part is rewritten only after the next unit's barrier */
            c_u = 0, c_o0 += gy * RB;
        }
    }
    cp_async_wait<0>();
}
template <typename T, int NTILE, int RB, int SLABS, bool BIG = false>
__global__ void __launch_bounds__(256 * SLABS, 1)
    gemv_pipe_kernel(const T *__restrict__ in, const T *__restrict__ w, int ldw, int I, int O, int n_tok, int tpb,
                     cuda_epi e) {
    gemv_pipe_body<T, NTILE, RB, SLABS, BIG, false>(in, w, ldw, I, O, n_tok, tpb, e, pipe_ln{});
}
/* The same product of the layer norm of the fp32 rows ln.x: a batch pass's
 * QKV and MLP products without ln_stage_kernel before them. H200, device
 * ms a decode pass at 128 + 64 tokens: see gemv_pipe_launch. */
template <typename T, int NTILE, int RB, int SLABS, bool BIG = false>
__global__ void __launch_bounds__(256 * SLABS, 1)
    gemv_pipe_ln_kernel(const T *__restrict__ w, int ldw, int I, int O, int n_tok, int tpb, cuda_epi e, pipe_ln ln) {
    gemv_pipe_body<T, NTILE, RB, SLABS, BIG, true>(NULL, w, ldw, I, O, n_tok, tpb, e, ln);
}

/*
 * The pipelined product of rows too long for a block to stage its tokens
 * whole beside the stages (gpt2-xl's MLP projection, 6400 wide, from 12
 * tokens), split along K over a cluster of 4 blocks by warp role: block z
 * takes the steps 8 o + 2 z and 8 o + 2 z + 1 of every row (the roles 2 z,
 * 2 z + 1 of gemv_mma_kernel's 8 warps: 128 contiguous bytes a row an
 * octet o) and stages only those of its tokens, a quarter of each row. Its
 * 8 warps are 2 roles x 4 row blocks side by side (a group), each warp one
 * role's accumulator chain over a row block, in step order - the chain a
 * warp of the T = 1 kernel runs. At a group's end the chains' partials meet
 * in shared memory (two buffers, alternating), a cluster barrier, and block
 * z adds row block z's in role order 0..7 from the 4 blocks' memory, then
 * the bias (mma_epilogue's expression): the bits a token gets alone.
 */
#define KSPLIT_LANES 4 /* row blocks of 16 side by side: the cluster's size too */

template <typename T, int NTILE>
__global__ void __launch_bounds__(256, 1)
    gemv_ksplit_kernel(const T *__restrict__ in, const T *__restrict__ w, int ldw, int I, int O, int n_tok, int tpb,
                       cuda_epi e) {
    /* a unit: 64 rows (4 row blocks) x 2 octets x the block's 2 steps of
     * each: 256 bytes (16 chunks) a row, 16 KB; 4 copies a thread */
    constexpr int OCT = 2, RCH = OCT * 8, UNIT = KSPLIT_LANES * 16 * RCH * 16, STAGES = PIPE_BYTES / UNIT;
    constexpr int CPT = KSPLIT_LANES * 16 * RCH / 256, PSZ = KSPLIT_LANES * 2 * NTILE * 32; /* float4s */
    extern __shared__ float4 sm4[];
    char *sm = reinterpret_cast<char *>(sm4);
    int z = blockIdx.x; /* the block's rank in its cluster of KSPLIT_LANES along x */
    int nk = (ldw + 31) >> 5, noct = (nk + 7) >> 3, nch = ldw >> 3, nu = (noct + OCT - 1) / OCT;
    int S = ((noct * 2) | 1) * 64; /* a staged token: its 2 noct steps, odd in 64s */
    int t0 = blockIdx.z * tpb, nt = min(tpb, n_tok - t0);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    int role = warp & 1, wl = warp >> 1; /* this warp's role (of the block's 2) and row block */
    int ngr = (O + 16 * KSPLIT_LANES - 1) / (16 * KSPLIT_LANES), by = blockIdx.y, gy = gridDim.y;
    int ng = ngr > by ? (ngr - by + gy - 1) / gy : 0, nv = ng * nu;
    char *ws = sm + (size_t)min(tpb, n_tok) * S;
    float4 *part = reinterpret_cast<float4 *>(ws + STAGES * UNIT); /* two buffers of PSZ */
    int i_o0 = by * 16 * KSPLIT_LANES, i_u = 0, i_st = 0, issued = 0;
    auto issue = [&]() {
        if (issued < nv) {
            char *dst = ws + i_st * UNIT;
#pragma unroll
            for (int h = 0; h < CPT; h++) {
                int idx = threadIdx.x + h * 256, r = idx / RCH, ci = idx % RCH;
                int oc = i_u * OCT + ci / 8, c = (8 * oc + 2 * z + ((ci >> 2) & 1)) * 4 + (ci & 3);
                bool ok = oc < noct && c < nch;
                const T *src = w + (size_t)min(i_o0 + r, O - 1) * ldw + (size_t)(ok ? c : 0) * 8;
                cp_async16(dst + r * (RCH * 16) + ((ci ^ ((r & 1) << 2)) << 4), src, ok ? 16 : 0);
            }
            issued++;
            if (++i_u == nu) i_u = 0, i_o0 += gy * 16 * KSPLIT_LANES;
            if (++i_st == STAGES) i_st = 0;
        }
        cp_async_commit();
    };
    for (int v = 0; v < STAGES - 1; v++) issue();
    pdl_wait();
    pdl_trigger();
    /* The block's quarter of its tokens: compact step 2 o + j is step
     * 8 o + 2 z + j; chunks past I zero, as mma_stage_tokens'. */
    {
        int k8 = noct * 2 * 4;
        for (int u = threadIdx.x; u < nt * k8; u += blockDim.x) {
            int jt = u / k8, cc = u - jt * k8, cs = cc >> 2;
            int c = (8 * (cs >> 1) + 2 * z + (cs & 1)) * 4 + (cc & 3);
            bool ok = c * 8 < I;
            cp_async16(sm + (size_t)jt * S + cc * 16, in + (size_t)(t0 + jt) * I + (size_t)(ok ? c : 0) * 8,
                       ok ? 16 : 0);
        }
        cp_async_wait_all();
    }
    __syncthreads();
    float acc[NTILE][4];
#pragma unroll
    for (int j = 0; j < NTILE; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    int c_o0 = by * 16 * KSPLIT_LANES, c_u = 0, c_st = 0, grp = 0;
    for (int v = 0; v < nv; v++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads(); /* unit v is here; unit v - 1's stage is free */
        issue();
        const char *st = ws + c_st * UNIT;
#pragma unroll
        for (int k = 0; k < OCT; k++) {
            int oc = c_u * OCT + k, step = 8 * oc + 2 * z + role;
            if (oc >= noct || step >= nk) break;
            int r0 = wl * 16 + g, ci = (k * 2 + role) * 4 + q;
            int off_w = r0 * (RCH * 16) + ((ci ^ ((r0 & 1) << 2)) << 4);
            uint4 wa = *reinterpret_cast<const uint4 *>(st + off_w);
            uint4 wb = *reinterpret_cast<const uint4 *>(st + off_w + 8 * (RCH * 16));
            int off = (2 * oc + role) * 64 + q * 16;
#pragma unroll
            for (int j = 0; j < NTILE; j++) {
                int n = j * 8 + g;
                uint4 xb = make_uint4(0, 0, 0, 0);
                if (n < nt) xb = *reinterpret_cast<const uint4 *>(sm + (size_t)n * S + off);
                mma16816<T>(acc[j], wa.x, wb.x, wa.y, wb.y, xb.x, xb.y);
                mma16816<T>(acc[j], wa.z, wb.z, wa.w, wb.w, xb.z, xb.w);
            }
        }
        if (++c_st == STAGES) c_st = 0;
        if (++c_u == nu) {
            float4 *pb = part + (grp & 1) * PSZ;
#pragma unroll
            for (int j = 0; j < NTILE; j++) {
                pb[((wl * 2 + role) * NTILE + j) * 32 + lane] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
                acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
            }
            /* every block's partials of the group published (the other
             * buffer's readers of the group before are past this too) */
            cluster_arrive();
            cluster_wait();
            int orow = threadIdx.x & 15, ob = c_o0 + z * 16;
            float bb = e.bias && ob + orow < O ? __ldg(e.bias + ob + orow) : 0.0f;
            cuda_epi ee = e;
            ee.bias = NULL;
            const float *mine = reinterpret_cast<const float *>(pb);
            for (int i = threadIdx.x; i < 16 * nt; i += 256) {
                int n = i >> 4, j = n >> 3, c = n & 7;
                int src = mma_frag_index(orow, c);
                /* role r's partial: block r / 2, slot (row block z, role r % 2) */
                float v = cluster_map(mine, 0)[((z * 2 + 0) * NTILE + j) * 128 + src];
#pragma unroll
                for (int r = 1; r < 8; r++)
                    v += cluster_map(mine, r >> 1)[((z * 2 + (r & 1)) * NTILE + j) * 128 + src];
                if (ob + orow < O) epi_store<T>(ee, t0 + n, ob + orow, v + bb);
            }
            c_u = 0, c_o0 += gy * 16 * KSPLIT_LANES, grp++;
        }
    }
    /* no block leaves while another may still read its partials */
    cluster_arrive();
    cluster_wait();
    cp_async_wait<0>();
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
    extern __shared__ float4 xs4[]; /* I floats, then ln_w and ln_b */
    __shared__ float red[32];
    float *xs = reinterpret_cast<float *>(xs4), *lw = xs + I, *lb = lw + I;
    int nthr = blockDim.x;
    /* The parameters before the wait (block_sum's barriers publish them):
     * their round trip overlaps the previous kernel's end, not this one's. */
    for (int i = threadIdx.x; i < I; i += nthr) lw[i] = __ldg(ln_w + i), lb[i] = __ldg(ln_b + i);
    pdl_wait();
    pdl_trigger();
    float mean, rstd;
    ln_stage_row(x + (size_t)blockIdx.x * I, xs, xs4, I, eps, red, mean, rstd);
    T *o = xn + (size_t)blockIdx.x * I;
    for (int i = threadIdx.x; i < I; i += nthr) o[i] = from_f<T>((xs[i] - mean) * rstd * lw[i] + lb[i]);
}

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

static int g_lnw = -1, g_lnr, g_nw, g_nr, g_nt_min, g_ntw, g_ntr, g_ntb, g_mma, g_ln4, g_rb, g_persist, g_tpb, g_tail;
/* gemv_pipe_launch's switches */
static int g_pipe, g_pipe_rb, g_pipe_slabs, g_pipe_tpb, g_pipe_big, g_ksplit, g_pipe_ln, g_pipe_ln_i, g_pipe_wide;
static int g_show;

/* Tokens per block of a launch of T > 1 (T = 1: one). */
#define GEMV_NT 8
/* The largest dynamic shared memory a block may have (the multi-token
 * kernels are allowed all of it by cuda_gemv_prepare). */
static size_t g_smem_optin;
/* Multiprocessors of the device (the smallest of those in use). */
static int g_sms = 132;

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
    g_mma = env_int("GPTC_GEMV_MMA", 1);
    g_ln4 = env_int("GPTC_GEMV_LN4", 2);
    g_tail = env_int("GPTC_GEMV_TAIL", 3);
    g_show = env_int("GPTC_GEMV_SHOW", 0);
    g_rb = env_int("GPTC_GEMV_RB", 4);
    if (g_rb != 8 && g_rb != 16) g_rb = 4;
    g_persist = env_int("GPTC_GEMV_PERSIST", 1);
    g_tpb = env_int("GPTC_GEMV_TPB", 0);
    g_pipe = env_int("GPTC_GEMV_PIPE", 32);
    g_pipe_tpb = env_int("GPTC_GEMV_PIPE_TPB", 16);
    g_pipe_rb = env_int("GPTC_GEMV_PIPE_RB", 0);
    g_pipe_slabs = env_int("GPTC_GEMV_PIPE_SLABS", 0);
    g_pipe_big = env_int("GPTC_GEMV_PIPE_BIG", 1);
    g_pipe_ln = env_int("GPTC_GEMV_PIPE_LN", 64); /* gemv_pipe_launch: KB of fp32 rows, one group; 0: never */
    g_pipe_ln_i = env_int("GPTC_GEMV_PIPE_LN_I", 1280); /* and rows of at most this many */
    g_pipe_wide = env_int("GPTC_GEMV_PIPE_WIDE", 16384); /* gemv_pipe_launch: rows from which one group */
    g_ksplit = env_int("GPTC_GEMV_KSPLIT", 1);
}

/* Blocks of kernel k an SM holds at threads and smem bytes, on the current
 * device: cudaOccupancyMaxActiveBlocksPerMultiprocessor, its answers kept
 * (the query costs the host a few microseconds, and a pass outside a graph -
 * a batch's prompts, a short prompt - makes 4 products a layer). With
 * cluster > 1: clusters of that many blocks the device holds at once
 * (cudaOccupancyMaxActiveClusters; 0 where a GPC cannot place one, e.g. a
 * MIG slice). 0: unknown too. */
#define OCC_CACHE 512
static struct {
    const void *k;
    int slot, threads, cluster, per;
    size_t smem;
} g_occ[OCC_CACHE];
static int g_n_occ;
static pthread_mutex_t g_occ_mu = PTHREAD_MUTEX_INITIALIZER;

static int occupancy(const void *k, int threads, size_t smem, int cluster = 1) {
    int slot = cuda_device_slot(), per = -1;
    pthread_mutex_lock(&g_occ_mu);
    for (int i = 0; i < g_n_occ && per < 0; i++)
        if (g_occ[i].k == k && g_occ[i].slot == slot && g_occ[i].threads == threads && g_occ[i].smem == smem &&
            g_occ[i].cluster == cluster)
            per = g_occ[i].per;
    pthread_mutex_unlock(&g_occ_mu);
    if (per >= 0) return per;
    cudaError_t e;
    if (cluster > 1) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)cluster);
        cfg.blockDim = dim3((unsigned)threads);
        cfg.dynamicSmemBytes = smem;
        cudaLaunchAttribute at;
        at.id = cudaLaunchAttributeClusterDimension;
        at.val.clusterDim.x = (unsigned)cluster;
        at.val.clusterDim.y = at.val.clusterDim.z = 1;
        cfg.attrs = &at;
        cfg.numAttrs = 1;
        e = cudaOccupancyMaxActiveClusters(&per, k, &cfg);
    } else {
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, threads, smem);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0; /* not kept: asked again next time */
    }
    pthread_mutex_lock(&g_occ_mu);
    if (g_n_occ < OCC_CACHE) { /* full: the rest are asked each time */
        g_occ[g_n_occ].k = k, g_occ[g_n_occ].slot = slot, g_occ[g_n_occ].threads = threads;
        g_occ[g_n_occ].cluster = cluster, g_occ[g_n_occ].smem = smem, g_occ[g_n_occ].per = per;
        g_n_occ++;
    }
    pthread_mutex_unlock(&g_occ_mu);
    return per;
}

/* A tensor-core product's launch with no more blocks of rows than the SMs
 * hold at once (for grid.x groups of tokens): the row blocks split evenly
 * among them (GPTC_GEMV_PERSIST=1) or every place filled (2; 0: a block
 * per row block). A block then stages its tokens once for several row
 * blocks and has the next one's weights in flight over its epilogue; a row
 * block's sums do not depend on which block takes it. */
template <typename... KArgs, typename... Args>
static cudaError_t launch_rows(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                               Args... args) {
    int per = 0;
    if (g_persist && grid.y > 1) {
        per = occupancy(reinterpret_cast<const void *>(k), (int)block.x, smem);
        long slots = (long)per * g_sms / (long)grid.x;
        if (per > 0 && slots >= 1 && grid.y > slots) {
            long rounds = (grid.y + slots - 1) / slots;
            grid.y = (unsigned)(g_persist == 2 ? slots : (grid.y + rounds - 1) / rounds);
        }
    }
    if (g_show > 0) { /* GPTC_GEMV_SHOW=N: the first N launches, for checking which kernel runs */
        g_show--;
        const char *name = NULL;
        if (cudaFuncGetName(&name, reinterpret_cast<const void *>(k)) != cudaSuccess) name = "?";
        fprintf(stderr, "gptc gemv: %s grid %u x %u x %u, %u threads, %zu bytes shared, %d blocks an SM\n", name,
                grid.x, grid.y, grid.z, block.x, smem, occupancy(reinterpret_cast<const void *>(k), (int)block.x, smem));
    }
    return launch_pdl(k, grid, block, smem, st, args...);
}

static cudaError_t mma_attrs(const void *k, int bytes, bool one);

/* Sets kernel K's attributes (set(K)) once on each device, at its first
 * launch rather than in cuda_gemv_prepare (mma_rows says why). */
template <auto K, typename F> static cudaError_t attrs_at_first_launch(F set) {
    static std::atomic<bool> ready[CUDA_MAX_DEVICES];
    std::atomic<bool> &r = ready[cuda_device_slot()];
    if (r.load(std::memory_order_acquire)) return cudaSuccess;
    cudaError_t e = set(reinterpret_cast<const void *>(K));
    if (e == cudaSuccess) r.store(true, std::memory_order_release);
    return e;
}

/* A one-slab gemv_mma_kernel's launch, or with fz (one token) its fused
 * twin's: the same grid, shared memory and arguments. A fused kernel gets
 * its attributes (mma_attrs) at its first launch on a device, not with the
 * others in cuda_gemv_prepare, where setting them would load all 52 (CUDA
 * loads a kernel lazily, at its first use): with that, gpt2-xl's greedy
 * step ran 8-10 us slower on an H200 whether the fused kernels ran or not,
 * every product's machine code unchanged, and CUDA_MODULE_LOADING=EAGER
 * moved it by -2 to +30 us from run to run - where the kernels' code lies
 * matters; loaded here, the step's time is what it was (1.566 ms). */
template <typename W, bool LN, int NTILE, int NCL, int RB, int MINB = mma_minb(NTILE, NCL, 1, RB), bool TAIL = false>
static cudaError_t mma_rows(const cuda_fuse *fz, dim3 grid, size_t smem, cudaStream_t st, const void *in,
                            const W *wp, int ldw, int I, int O, int T, int tpb, cuda_epi epi, const float *ln_w,
                            const float *ln_b, float eps) {
    if constexpr (NTILE == 1)
        if (fz) {
            constexpr auto k = gemv_mma_fused_kernel<W, LN, NCL, RB, MINB, TAIL>;
            cudaError_t e = attrs_at_first_launch<k>([](const void *f) { return mma_attrs(f, (int)g_smem_optin, true); });
            if (e != cudaSuccess) return e;
            return launch_rows(k, grid, dim3(256), smem, st, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps, *fz);
        }
    return launch_rows(gemv_mma_kernel<W, LN, NTILE, NCL, 1, RB, MINB, TAIL>, grid, dim3(256), smem, st, in, wp, ldw,
                       I, O, T, tpb, epi, ln_w, ln_b, eps);
}

/* Loads in flight a lane: 2 x 4, 7 or 16 16-byte chunks, as a warp's share
 * of the row needs (gpt2's 768: 3 steps of 32; gpt2-xl's 1600: 7, its 6400:
 * 25). 7 rather than 8 leaves one token's kernel at most 85 registers, 3
 * blocks per SM: gpt2-xl's QKV (300 blocks) in one wave (one token's takes
 * the LN4 variant in gemv_mma_go). Blocks of RB < 16 rows: a lane loads one
 * row's chunks (RB = 8) or half the lanes do (4), so 16 in flight a lane fit
 * 2 blocks an SM (mma_minb). */
template <typename W, bool LN, int NTILE, int RB>
static cudaError_t gemv_mma_steps(dim3 grid, int steps, const void *in, const W *wp, int ldw, int I, int O, int T,
                                  int tpb, cuda_epi epi, const float *ln_w, const float *ln_b, float eps, size_t smem,
                                  cudaStream_t st, const cuda_fuse *fz) {
    if (steps <= 4)
        return mma_rows<W, LN, NTILE, 4, RB>(fz, grid, smem, st, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps);
    if (steps <= 8)
        return mma_rows<W, LN, NTILE, 7, RB>(fz, grid, smem, st, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps);
    /* One tile's rows of more than 16 steps a warp take the rest of their
     * first row block through shared memory (TAIL): gpt2-xl's MLP projection
     * (25 steps) and gpt2-large's (20). H100, decode ms/token: gpt2-xl 1.909
     * -> 1.870, gpt2-large 1.156 -> 1.119, the others unchanged. The
     * layer-norm products take it too (below). GPTC_GEMV_TAIL: 1 these rows
     * only, 2 the layer-norm products only, 0 never. */
    if constexpr (NTILE == 1) {
        size_t tb = mma_tail_bytes(ldw, 16, RB);
        if ((g_tail & 1) && tb && smem + tb <= g_smem_optin)
            return mma_rows<W, LN, 1, 16, RB, mma_minb(1, 16, 1, RB), true>(fz, grid, smem + tb, st, in, wp, ldw, I,
                                                                            O, T, tpb, epi, ln_w, ln_b, eps);
    }
    return mma_rows<W, LN, NTILE, 16, RB>(fz, grid, smem, st, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps);
}

template <typename W, bool LN, int NTILE>
static cudaError_t gemv_mma_go(const void *in, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                               const float *ln_w, const float *ln_b, float eps, int tpb, size_t smem,
                               cudaStream_t st, const cuda_fuse *fz = NULL) {
    dim3 grid((unsigned)((T + tpb - 1) / tpb), (unsigned)((O + 15) / 16));
    int steps = mma_warp_steps(ldw);
    const W *wp = (const W *)w;
    /* Two slabs a block, 7 loads a lane, where a block of one slab would be
     * alone on its SM - its staged tokens take over half the shared memory
     * (gpt2-xl's 1600 at 32 tokens: 100 KB) or its 16 loads a lane the
     * registers: 16 warps an SM, not 8, and half the staging per row. H100,
     * gpt2-xl at 128-token prompts: batch 32 5.36 -> 4.76 ms/step, 128
     * 15.4 -> 12.3 (R = 1 and 2 give the same sums: tests/gpu/test_kernels.cu
     * checks 41 tokens against one). Unless the row blocks are too few to
     * spread over the SMs at all. */
    if constexpr (NTILE > 1 && !LN) {
        bool one = 2 * (smem + 1024) > g_smem_optin || steps > 8;
        bool big = steps > 4 && (steps <= 8 || (long)grid.x * ((O + 31) / 32) * 4 >= g_sms);
        if (one && big) {
            size_t sm2 = smem + (size_t)NTILE * 8 * 32 * sizeof(float4);
            if (sm2 <= g_smem_optin) {
                grid.y = (unsigned)((O + 31) / 32);
                return launch_rows(gemv_mma_kernel<W, LN, NTILE, 7, 2>, grid, dim3(512), sm2, st, in, wp, ldw, I,
                                  O, T, tpb, epi, ln_w, ln_b, eps);
            }
        }
    }
    /* One token's layer-norm product of rows of 7-8 steps a warp, with more
     * row blocks than 2 an SM (gpt2-xl's QKV and FC: 300 and 400 on 132
     * SMs): 4 blocks an SM with 4 loads a lane in two rounds. H100, decode
     * ms/token: gpt2-xl 2.33 -> 2.07 (the FC alone 2.12: its 400 blocks
     * were 3 an SM and a second wave of 4); gpt2-large's 5 steps (320 and
     * 240 blocks) got slower, 1.26 -> 1.29, so they keep one round of 7.
     * Their second round of 4 comes through shared memory too (TAIL, 24 KB
     * more a block: 50 KB, 3 blocks an SM in mma_attrs' 164 KB): gpt2-xl
     * 1.838 -> 1.795. It made gpt2-xl slower, 1.91 -> 2.06, before the
     * carve-out (session 10): the driver's split then held fewer. */
    if constexpr (LN && NTILE == 1)
        if (g_ln4 && steps >= 7 && steps <= 8 && (long)grid.y > (long)g_ln4 * g_sms) {
            size_t tb = mma_tail_bytes(ldw, 4, 16);
            if ((g_tail & 2) && smem + tb <= g_smem_optin)
                return mma_rows<W, LN, 1, 4, 16, 4, true>(fz, grid, smem + tb, st, in, wp, ldw, I, O, T, tpb, epi, ln_w,
                                                          ln_b, eps);
            return mma_rows<W, LN, 1, 4, 16, 4>(fz, grid, smem, st, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps);
        }
    /* Fewer rows a block where blocks of 16 would leave SMs idle: the
     * projections back to the model width (gpt2's 768 rows are 48 blocks,
     * gpt2-xl's 1600 are 100, on 132 SMs) take 8 or 4 rows a block, the
     * same sums (see has0 in the kernel). H100, decode ms/token: gpt2 0.276
     * -> 0.262, gpt2-medium 0.621 -> 0.603, gpt2-large 1.243 -> 1.213,
     * gpt2-xl 2.045 -> 1.978. Only there: every product in blocks of 8 (4)
     * measured 0.277 (0.365) for gpt2 and 2.33 (2.98) for gpt2-xl - each
     * block stages (and normalises) the whole input row again.
     * GPTC_GEMV_RB=N: not fewer than N rows a block (16: never). */
    if constexpr (NTILE == 1) {
        int rb = 16;
        while (rb > g_rb && (long)grid.x * ((O + rb - 1) / rb) < g_sms) rb /= 2;
        if (rb < 16) {
            grid.y = (unsigned)((O + rb - 1) / rb);
            if (rb == 8)
                return gemv_mma_steps<W, LN, 1, 8>(grid, steps, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps, smem,
                                                   st, fz);
            return gemv_mma_steps<W, LN, 1, 4>(grid, steps, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps, smem, st,
                                               fz);
        }
    }
    return gemv_mma_steps<W, LN, NTILE, 16>(grid, steps, in, wp, ldw, I, O, T, tpb, epi, ln_w, ln_b, eps, smem, st,
                                            fz);
}

/* A gemv_pipe_ln_kernel launch, its attributes set at its first launch. */
template <auto K, int SLABS, typename... Args>
static cudaError_t pipe_ln_rows(dim3 grid, size_t smem, cudaStream_t st, Args... args) {
    cudaError_t e = attrs_at_first_launch<K>([](const void *f) {
        return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)g_smem_optin);
    });
    return e != cudaSuccess ? e : launch_rows(K, grid, dim3(256 * SLABS), smem, st, args...);
}

template <typename W, int NTILE, int RB>
static cudaError_t gemv_pipe_go(dim3 grid, int slabs, const void *in, const void *w, int ldw, int T, int I, int O,
                                cuda_epi epi, int tpb, size_t smem, cudaStream_t st, const pipe_ln *ln) {
    if (ln) {
        if constexpr (RB == 16 && NTILE > 1)
            if (slabs == 3)
                return pipe_ln_rows<gemv_pipe_ln_kernel<W, NTILE, RB, 2, true>, 2>(grid, smem, st, (const W *)w, ldw,
                                                                                  I, O, T, tpb, epi, *ln);
        if (slabs == 2)
            return pipe_ln_rows<gemv_pipe_ln_kernel<W, NTILE, RB, 2>, 2>(grid, smem, st, (const W *)w, ldw, I, O, T,
                                                                         tpb, epi, *ln);
        return pipe_ln_rows<gemv_pipe_ln_kernel<W, NTILE, RB, 1>, 1>(grid, smem, st, (const W *)w, ldw, I, O, T, tpb,
                                                                     epi, *ln);
    }
    if constexpr (RB == 16 && NTILE > 1)
        if (slabs == 3) /* two slabs, units of 2 steps a warp (GPTC_GEMV_PIPE_BIG) */
            return launch_rows(gemv_pipe_kernel<W, NTILE, RB, 2, true>, grid, dim3(512), smem, st, (const W *)in,
                               (const W *)w, ldw, I, O, T, tpb, epi);
    if (slabs == 2)
        return launch_rows(gemv_pipe_kernel<W, NTILE, RB, 2>, grid, dim3(512), smem, st, (const W *)in, (const W *)w,
                           ldw, I, O, T, tpb, epi);
    return launch_rows(gemv_pipe_kernel<W, NTILE, RB, 1>, grid, dim3(256), smem, st, (const W *)in, (const W *)w, ldw,
                       I, O, T, tpb, epi);
}

/* gemv_pipe_kernel for T tokens, 16 a block (GPTC_GEMV_PIPE_TPB=N: N, 8 to
 * 32; 32 tokens of gpt2-xl in one group measured slower, above).
 * cudaErrorNotSupported where their rows and the pipeline do not fit in
 * shared memory (gpt2-xl's MLP projection, 6400 wide, from 12 tokens):
 * gemv_mma_kernel then - groups of fewer tokens would each read all the
 * weights (measured: gpt2-xl's 32 in 4 groups of 8 at 81 us, 24 with
 * gemv_mma_kernel). Units of 8 rows for one tile of tokens where row blocks
 * of 16 would leave the last round's slabs less busy: the rows a slab takes
 * at most decide (with 2 or 4 tiles, 8 rows cost twice the mmas a byte:
 * slower; GPTC_GEMV_PIPE_RB=8 / 16 and GPTC_GEMV_PIPE_SLABS=1 for A/B). */
template <typename W>
static cudaError_t gemv_pipe_launch(const void *in, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                                    cudaStream_t st, const pipe_ln *lnp = NULL) {
    size_t S = (size_t)mma_row_bytes(ldw), part = 8 * 32 * sizeof(float4);
    int most = g_pipe_tpb >= 8 && g_pipe_tpb < GEMV_MMA_TOK ? g_pipe_tpb : GEMV_MMA_TOK;
    /* A product of many rows (the LM head) keeps every SM busy with one
     * group of tokens, so it reads its weights once rather than once a
     * group. GPTC_GEMV_PIPE_WIDE=N: from N rows on (0: never). */
    if (g_pipe_wide > 0 && O >= g_pipe_wide) most = GEMV_MMA_TOK;
    int tpb = T < most ? T : most;
    int tiles = (tpb + 7) / 8, slabs = 2;
    if (g_pipe_slabs == 1 || g_pipe_slabs == 2) slabs = g_pipe_slabs;
    size_t smem = (size_t)tpb * S + PIPE_BYTES + (size_t)slabs * (tiles == 3 ? 4 : tiles) * part;
    /* lnp: the layer norm's parameters after the partial sums; rows a warp
     * holds in registers (I a multiple of 4, at most 128 PIPE_LN_NV) */
    size_t ln_par = lnp ? 2 * (size_t)I * sizeof(float) : 0;
    if (smem + ln_par > g_smem_optin || (lnp && ((I & 3) || I > 128 * PIPE_LN_NV))) return cudaErrorNotSupported;
    /* its rows' and parameters' 16-byte copies and loads (the arena's are) */
    if (lnp && (((uintptr_t)lnp->x | (uintptr_t)lnp->w | (uintptr_t)lnp->b) & 15)) return cudaErrorNotSupported;
    /* Every block of a group reads its tokens' fp32 rows (where
     * ln_stage_kernel's rows were read once, and the product's staging
     * read half the bytes): a win only while those are few, in one group.
     * H200, device ms a decode pass at 128 + 64 tokens, ln_stage_kernel ->
     * this for every pass of 2-32 tokens: batch 8 (8 tokens a block) gpt2
     * 0.333 -> 0.320, gpt2-medium 0.763 -> 0.720, gpt2-large 1.345 -> 1.323,
     * gpt2-xl (50 KB a block) 2.064 -> 2.156; batch 32 (16 a block, 48 KB
     * and more) gpt2 0.487 -> 0.494, gpt2-medium 1.141 -> 1.161, gpt2-large
     * 2.139 -> 2.131, gpt2-xl 3.60 -> 3.67; batch 4 gpt2 0.330 -> 0.319,
     * gpt2-medium 0.774 -> 0.733; batch 10 gpt2 (30 KB) 0.357 -> 0.353;
     * batch 12 gpt2 (36 KB) 0.363 -> 0.361. In groups of 8 (GPTC_GEMV_PIPE_
     * TPB=8, 24 KB a block) slower: gpt2 batch 16 0.411 -> 0.426, batch 32
     * 0.525 -> 0.541. With the statistics' halvings (session 17, ln_stage_
     * kernel -> this): gpt2-medium batch 12 (48 KB) 0.810 -> 0.792, batch 16
     * (64 KB) 0.934 -> 0.922, gpt2 batch 16 0.383 -> 0.379; gpt2-xl batch 8
     * (51 KB) still 2.063 -> 2.121. GPTC_GEMV_PIPE_LN=N: up to N KB a block
     * (default 64); GPTC_GEMV_PIPE_LN_I=N: rows up to N wide (1280). */
    if (lnp && (T > tpb || I > g_pipe_ln_i || (size_t)tpb * I * sizeof(float) > (size_t)g_pipe_ln * 1024))
        return cudaErrorNotSupported;
    /* 2 or 4 tiles in two slabs take units of 2 steps a warp (half the
     * barriers and copy issues a byte, for consumers that were instruction-
     * bound) and 96 KB in flight, where that fits; "slabs" 3 tells
     * gemv_pipe_go. H100, device ms a decode step (128 + 64 tokens): gpt2
     * batch 16 0.417 -> 0.401, 32 0.513 -> 0.496; gpt2-xl 16 3.03 -> 2.99,
     * 32 3.96 -> 3.90 (batch 8, one tile: unchanged). GPTC_GEMV_PIPE_BIG=0:
     * units of one step. */
    size_t big = smem + PIPE_BYTES_BIG - PIPE_BYTES;
    bool use_big = g_pipe_big && slabs == 2 && tiles > 1 && big + ln_par <= g_smem_optin;
    if (use_big) smem = big;
    smem += ln_par;
    unsigned groups = (unsigned)((T + tpb - 1) / tpb);
    long slots = g_sms * (long)slabs / (long)groups;
    if (slots < 1) slots = 1;
    long r16 = ((O + 15) / 16 + slots - 1) / slots * 16, r8 = ((O + 7) / 8 + slots - 1) / slots * 8;
    int rb = tiles == 1 && r8 < r16 ? 8 : 16;
    if (g_pipe_rb == 8 || g_pipe_rb == 16) rb = g_pipe_rb;
    if (use_big) rb = 16, slabs = 3;
    if ((O + rb - 1) / rb > 65535) return cudaErrorNotSupported;
    int sl = slabs == 3 ? 2 : slabs;
    dim3 grid(groups, (unsigned)(((O + rb - 1) / rb + sl - 1) / sl));
    if (tiles == 1)
        return rb == 8 ? gemv_pipe_go<W, 1, 8>(grid, slabs, in, w, ldw, T, I, O, epi, tpb, smem, st, lnp)
                       : gemv_pipe_go<W, 1, 16>(grid, slabs, in, w, ldw, T, I, O, epi, tpb, smem, st, lnp);
    if (tiles == 2)
        return rb == 8 ? gemv_pipe_go<W, 2, 8>(grid, slabs, in, w, ldw, T, I, O, epi, tpb, smem, st, lnp)
                       : gemv_pipe_go<W, 2, 16>(grid, slabs, in, w, ldw, T, I, O, epi, tpb, smem, st, lnp);
    return rb == 8 ? gemv_pipe_go<W, 4, 8>(grid, slabs, in, w, ldw, T, I, O, epi, tpb, smem, st, lnp)
                   : gemv_pipe_go<W, 4, 16>(grid, slabs, in, w, ldw, T, I, O, epi, tpb, smem, st, lnp);
}

/* gemv_ksplit_kernel for 2-32 tokens, in clusters of KSPLIT_LANES blocks
 * along x, groups of tokens along z: the products the pipe cannot stage
 * (gpt2-xl's MLP projection from 12 tokens), which gemv_mma_kernel took
 * before. H100, device ms a decode step (128 + 64 tokens): gpt2-xl batch 16
 * 3.03 -> 2.75, 32 3.96 -> 3.74 (groups of 16 tokens, GPTC_GEMV_KSPLIT=16:
 * 3.89; 0: never). cudaErrorNotSupported: not sm_90, I not a multiple of 8,
 * or too big. */
template <typename W, int NTILE>
static cudaError_t gemv_ksplit_go(dim3 grid, size_t smem, const void *in, const void *w, int ldw, int T, int I, int O,
                                  cuda_epi epi, int tpb, cudaStream_t st) {
    /* A card or MIG slice whose GPCs cannot place a cluster of these blocks
     * (~200 KB of shared memory each) takes gemv_mma_kernel instead: the
     * same sums. */
    int clusters = occupancy(reinterpret_cast<const void *>(gemv_ksplit_kernel<W, NTILE>), 256, smem, KSPLIT_LANES);
    if (g_show > 0) {
        g_show--;
        fprintf(stderr, "gptc gemv: gemv_ksplit_kernel<%d tiles> grid %u x %u x %u, %zu bytes shared, %d clusters at once\n",
                NTILE, grid.x, grid.y, grid.z, smem, clusters);
    }
    if (clusters < 1) return cudaErrorNotSupported;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = dim3(256);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[2];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = KSPLIT_LANES;
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = cuda_pdl_enabled() ? 2 : 1;
    return cudaLaunchKernelEx(&cfg, gemv_ksplit_kernel<W, NTILE>, (const W *)in, (const W *)w, ldw, I, O, T, tpb,
                              epi);
}
template <typename W>
static cudaError_t gemv_ksplit_launch(const void *in, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                                      cudaStream_t st) {
    if (cuda_device_major() < 9 || (I & 7)) return cudaErrorNotSupported;
    /* GPTC_GEMV_KSPLIT=N: up to N tokens a block (8 to 32; 1, the default: 32) */
    int most = g_ksplit >= 8 && g_ksplit < GEMV_MMA_TOK ? g_ksplit : GEMV_MMA_TOK;
    int tpb = T < most ? T : most, tiles = (tpb + 7) / 8, nt4 = tiles == 3 ? 4 : tiles;
    int noct = mma_warp_steps(ldw);
    size_t S = (size_t)((noct * 2) | 1) * 64;
    size_t smem = tpb * S + PIPE_BYTES + 2 * (size_t)KSPLIT_LANES * 2 * nt4 * 32 * sizeof(float4);
    if (smem > g_smem_optin) return cudaErrorNotSupported;
    unsigned groups = (unsigned)((T + tpb - 1) / tpb);
    long ngr = (O + 16 * KSPLIT_LANES - 1) / (16 * KSPLIT_LANES), slots = g_sms / KSPLIT_LANES / (long)groups;
    if (slots < 1) slots = 1;
    long rounds = (ngr + slots - 1) / slots;
    dim3 grid(KSPLIT_LANES, (unsigned)((ngr + rounds - 1) / rounds), groups);
    if (tiles == 1) return gemv_ksplit_go<W, 1>(grid, smem, in, w, ldw, T, I, O, epi, tpb, st);
    if (tiles == 2) return gemv_ksplit_go<W, 2>(grid, smem, in, w, ldw, T, I, O, epi, tpb, st);
    return gemv_ksplit_go<W, 4>(grid, smem, in, w, ldw, T, I, O, epi, tpb, st);
}

/* The tensor-core product (gemv_mma_kernel). Its shape depends on ldw alone
 * - tokens a block takes as many as fit in shared memory, up to
 * GEMV_MMA_TOK - and a token's sums on nothing else, so any T gives each
 * token the bytes T = 1 gives it. */
template <typename W, bool LN>
static cudaError_t gemv_mma_launch(const void *in, const void *w, int ldw, int T, int I, int O,
                                   cuda_epi epi, const float *ln_w, const float *ln_b, float eps,
                                   void *xn, cudaStream_t st, const cuda_fuse *fz) {
    size_t S = (size_t)mma_row_bytes(ldw), part = 8 * 32 * sizeof(float4); /* a tile's partial sums */
    if ((O + 15) / 16 > 65535) return cudaErrorInvalidConfiguration;
    if (LN) {
        if (T > 1 && xn && T <= g_pipe && g_pipe_ln) {
            /* 2-32 tokens, few short rows a block: the pipe normalises its
             * own tokens (no kernel between, no round trip through xn) */
            pipe_ln ln = {(const float *)in, ln_w, ln_b, eps};
            cudaError_t e = gemv_pipe_launch<W>(NULL, w, ldw, T, I, O, epi, st, &ln);
            if (e != cudaErrorNotSupported) return e;
        }
        if (T > 1 && xn && 3 * (size_t)I * sizeof(float) <= g_smem_optin) {
            /* The layer norm once per token (256 threads: the fused
             * kernel's block, so the same sums), then the product. */
            cudaError_t e = launch_pdl(ln_stage_kernel<W>, dim3((unsigned)T), dim3(256),
                                       3 * (size_t)I * sizeof(float), st, (W *)xn, (const float *)in, ln_w,
                                       ln_b, eps, I);
            if (e != cudaSuccess) return e;
            return gemv_mma_launch<W, false>(xn, w, ldw, T, I, O, epi, NULL, NULL, 0.0f, NULL, st, NULL);
        }
        size_t smem = S + 3 * (size_t)ldw * sizeof(float) + part;
        if (smem > g_smem_optin) return cudaErrorInvalidValue;
        return gemv_mma_go<W, true, 1>(in, w, ldw, T, I, O, epi, ln_w, ln_b, eps, 1, smem, st, fz);
    }
    /* 2-32 tokens (a batch's decode pass; GPTC_GEMV_PIPE=N: up to N, 0
     * never); the K split where the pipe does not fit */
    if (T > 1 && T <= g_pipe) {
        cudaError_t e = gemv_pipe_launch<W>(in, w, ldw, T, I, O, epi, st);
        if (e == cudaErrorNotSupported && g_ksplit) e = gemv_ksplit_launch<W>(in, w, ldw, T, I, O, epi, st);
        if (e != cudaErrorNotSupported) return e;
    }
    size_t fit = g_smem_optin > 4 * part ? (g_smem_optin - 4 * part) / S : 0;
    if (fit < 1) return cudaErrorInvalidValue;
    /* Fewer tokens a block where the row blocks alone would leave SMs idle
     * (gpt2's 768 rows are 48 blocks): the groups of a row block run side by
     * side and find its weights in L2. */
    int tpb = fit < GEMV_MMA_TOK ? (int)fit : GEMV_MMA_TOK, rbs = (O + 15) / 16;
    if (g_tpb > 0 && g_tpb < tpb) tpb = g_tpb; /* GPTC_GEMV_TPB=N: at most N tokens a block */
    /* One group of 17-32 tokens is cut in two: twice the blocks, each
     * staging half the rows (NTILE 2), the weights of a row block read by
     * both from L2. H100, device ms a step at batch 32: gpt2 0.619 -> 0.578,
     * gpt2-xl 4.34 -> 4.30 (at 128, 8 groups for 4: slower, 1.21 -> 1.24 and
     * 10.1 -> 11.0). GPTC_GEMV_TPB=32: not cut. */
    if (g_tpb == 0 && T > 16 && T <= tpb && tpb > 16) tpb = 16;
    while (tpb > 8 && (long)((T + tpb - 1) / tpb) * rbs < g_sms) tpb /= 2;
    int n = T < tpb ? T : tpb, tiles = (n + 7) / 8;
    size_t smem = (size_t)n * S + (size_t)(tiles == 3 ? 4 : tiles) * part;
    if (tiles == 1)
        return gemv_mma_go<W, false, 1>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f, tpb, smem, st, fz);
    if (tiles == 2)
        return gemv_mma_go<W, false, 2>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f, tpb, smem, st);
    return gemv_mma_go<W, false, 4>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f, tpb, smem, st);
}

template <typename W, bool LN>
static cudaError_t gemv_launch(const void *in, const void *w, int ldw, int T, int I, int O,
                               cuda_epi epi, const float *ln_w, const float *ln_b, float eps,
                               void *xn, cudaStream_t st, const cuda_fuse *fz = NULL) {
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
     * GPTC_GEMV_NTB (3: gemv_nt_kernel; 1: gemv_kernel's 2 blocks per SM).
     * fp16 and bf16 take the tensor-core kernel (GPTC_GEMV_MMA=0: these
     * CUDA-core kernels, for comparisons; GPTC_GEMV_LN4=N: the layer-norm
     * product of 4 blocks an SM from N x SMs row blocks on, 0 never, default
     * 2; GPTC_GEMV_RB=8 or 16: under-filled products in blocks of no fewer
     * rows, default 4; both gemv_mma_go). */
    gemv_shapes();
    /* The pick and the embedding: one token's tensor-core kernel only
     * (cuda_gemv_fuses), the pick of stored values, the embedding as a
     * layer norm's input. */
    if (fz && (T != 1 || (fz->pick.ticket && epi.mode != EPI_STORE) || (fz->emb.wte && !LN)))
        return cudaErrorNotSupported;
    if constexpr (sizeof(W) == 2) {
        if (g_mma) return gemv_mma_launch<W, LN>(in, w, ldw, T, I, O, epi, ln_w, ln_b, eps, xn, st, fz);
    }
    if (fz) return cudaErrorNotSupported;
    size_t row = (size_t)ldw * sizeof(float);
    int multi = g_nt_min > 0 && T >= g_nt_min && T > 1 && GEMV_NT * row <= g_smem_optin;
    if (LN && multi && xn && 3 * (size_t)I * sizeof(float) <= g_smem_optin) {
        /* The layer norm once per token, then the multi-token product. */
        cudaError_t e = launch_pdl(ln_stage_kernel<W>, dim3((unsigned)T), dim3(g_lnw * 32),
                                   3 * (size_t)I * sizeof(float), st, (W *)xn, (const float *)in, ln_w,
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

int cuda_gemv_fuses(gptc_dtype dt) {
    gemv_shapes();
    return dt != GPTC_DTYPE_F32 && g_mma;
}

cudaError_t cuda_gemv(gptc_dtype dt, const void *in, const void *w, int ldw, int T, int I, int O,
                      cuda_epi epi, cudaStream_t st, const cuda_fuse *fuse) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W,
                        err = gemv_launch<W, false>(in, w, ldw, T, I, O, epi, NULL, NULL, 0.0f,
                                                    NULL, st, fuse));
    return err != cudaSuccess ? err : cudaGetLastError();
}

cudaError_t cuda_gemv_ln(gptc_dtype dt, const float *x, const float *ln_w, const float *ln_b,
                         float eps, const void *w, int ldw, int T, int I, int O, cuda_epi epi,
                         void *xn, cudaStream_t st, const cuda_fuse *fuse) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W,
                        err = gemv_launch<W, true>(x, w, ldw, T, I, O, epi, ln_w, ln_b, eps, xn,
                                                   st, fuse));
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
/* A gemv_mma_kernel may use `bytes` of shared memory. A one-token one
 * (NTILE 1) on sm_90 also asks for 60% of the SM's unified L1 as shared
 * memory (164 of 256 KB) whatever its own blocks need. Left to itself the
 * driver sizes each kernel's split to its own blocks; the likely cost of
 * that: an SM takes the next kernel's blocks (launched early, PDL) only
 * where they fit beside the blocks still running, and gpt2-xl's MLP
 * projection (2 x 54 KB an SM) leaves no room for the next QKV product's
 * (26 KB a block) in its own split. More is worse, and too little limits
 * the blocks an SM (0%: gpt2-xl 3.1 ms a token; every kernel of the step at
 * 100%: 2.04) - plausibly because the weights loaded into registers before
 * the wait are in flight through L1. H100, decode ms/token: gpt2-xl 1.874
 * -> 1.842, gpt2-large 1.119 -> 1.115, gpt2 and gpt2-medium unchanged,
 * batches unchanged (bench/NOTES-cuda.md, session 11). GPTC_GEMV_CARVEOUT=N
 * asks for N% instead, -1 for the driver's choice. */
static cudaError_t mma_attrs(const void *k, int bytes, bool one) {
    int carve = env_int("GPTC_GEMV_CARVEOUT", cuda_device_major() == 9 ? 60 : -1);
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e == cudaSuccess && one && carve >= 0)
        e = cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, carve > 100 ? 100 : carve);
    return e;
}
#define MMA_ATTRS(k, bytes, ...) mma_attrs(reinterpret_cast<const void *>(k), bytes, __VA_ARGS__)
/* gemv_mma_steps' three variants may use `bytes` of shared memory (their
 * fused twins: mma_rows). */
template <typename W, bool LN, int NTILE, int RB> static cudaError_t gemv_mma_steps_prepare(int bytes) {
    cudaError_t e = MMA_ATTRS((gemv_mma_kernel<W, LN, NTILE, 4, 1, RB>), bytes, NTILE == 1);
    if (e == cudaSuccess) e = MMA_ATTRS((gemv_mma_kernel<W, LN, NTILE, 7, 1, RB>), bytes, NTILE == 1);
    if (e == cudaSuccess) e = MMA_ATTRS((gemv_mma_kernel<W, LN, NTILE, 16, 1, RB>), bytes, NTILE == 1);
    if constexpr (NTILE == 1)
        if (e == cudaSuccess)
            e = MMA_ATTRS((gemv_mma_kernel<W, LN, 1, 16, 1, RB, mma_minb(1, 16, 1, RB), true>), bytes, true);
    return e;
}
template <typename W, bool LN, int NTILE> static cudaError_t gemv_mma_prepare(int bytes) {
    cudaError_t e = gemv_mma_steps_prepare<W, LN, NTILE, 16>(bytes);
    if constexpr (LN && NTILE == 1) {
        if (e == cudaSuccess) e = MMA_ATTRS((gemv_mma_kernel<W, LN, 1, 4, 1, 16, 4>), bytes, true);
        if (e == cudaSuccess) e = MMA_ATTRS((gemv_mma_kernel<W, LN, 1, 4, 1, 16, 4, true>), bytes, true);
    }
    if constexpr (NTILE == 1) {
        if (e == cudaSuccess) e = gemv_mma_steps_prepare<W, LN, 1, 8>(bytes);
        if (e == cudaSuccess) e = gemv_mma_steps_prepare<W, LN, 1, 4>(bytes);
    }
    if constexpr (NTILE > 1 && !LN)
        if (e == cudaSuccess)
            e = cudaFuncSetAttribute(gemv_mma_kernel<W, LN, NTILE, 7, 2>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if constexpr (!LN) {
        const void *pipes[] = {(const void *)gemv_pipe_kernel<W, NTILE, 16, 1>,
                               (const void *)gemv_pipe_kernel<W, NTILE, 8, 1>,
                               (const void *)gemv_pipe_kernel<W, NTILE, 16, 2>,
                               (const void *)gemv_pipe_kernel<W, NTILE, 8, 2>,
                               (const void *)gemv_pipe_kernel<W, NTILE, 16, 2, true>,
                               (const void *)gemv_ksplit_kernel<W, NTILE>};
        for (const void *k : pipes)
            if (e == cudaSuccess) e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    }
    return e;
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
    if constexpr (sizeof(W) == 2) {
        if (e == cudaSuccess) e = gemv_mma_prepare<W, true, 1>(bytes);
        if (e == cudaSuccess) e = gemv_mma_prepare<W, false, 1>(bytes);
        if (e == cudaSuccess) e = gemv_mma_prepare<W, false, 2>(bytes);
        if (e == cudaSuccess) e = gemv_mma_prepare<W, false, 4>(bytes);
    }
    return e;
}
cudaError_t cuda_gemv_prepare(int max_ldw, int max_ln_ldw) {
    /* The limits only grow, per device (see cuda_attention_prepare). */
    static int max_bytes_of[CUDA_MAX_DEVICES], max_ln_bytes_of[CUDA_MAX_DEVICES];
    static bool nt_ready[CUDA_MAX_DEVICES], nt_ready_any;
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
        int dev = 0, optin = 0, sms = 0;
        if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
            (e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) !=
                cudaSuccess ||
            (e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess)
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
        if (!nt_ready_any || sms < g_sms) g_sms = sms;
        nt_ready_any = true;
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

/* The K and V thirds of qkv (T, e.ldo) fp32 - already v + bias - into the
 * cache, as epi_store's EPI_QKV writes them; four at a time when C and ldo
 * allow 16-byte loads. */
template <typename T, bool VEC> __global__ void kv_store_kernel(const float *qkv, cuda_epi e) {
    int t = blockIdx.y, C = e.C;
    const float *row = qkv + (size_t)t * e.ldo + C;
    size_t cr = kv_cache_row(e, t);
    int step = gridDim.x * blockDim.x;
    if (VEC) {
        for (int o = 4 * (blockIdx.x * blockDim.x + threadIdx.x); o < 2 * C; o += 4 * step) {
            float4 v = *reinterpret_cast<const float4 *>(row + o);
            T *dst = o < C ? (T *)e.k_cache + cr + o : (T *)e.v_cache + cr + (o - C);
            store4(dst, v.x, v.y, v.z, v.w);
        }
    } else {
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < 2 * C; o += step) {
            T v = from_f<T>(row[o]);
            if (o < C) ((T *)e.k_cache)[cr + o] = v;
            else ((T *)e.v_cache)[cr + (o - C)] = v;
        }
    }
}

cudaError_t cuda_kv_store(gptc_dtype dt, const float *qkv, int T, cuda_epi epi, cudaStream_t st) {
    bool vec = epi.C % 4 == 0 && epi.ldo % 4 == 0;
    unsigned gx = (unsigned)((2 * epi.C / (vec ? 4 : 1) + 255) / 256);
    if (gx > 64) gx = 64;
    dim3 grid(gx, (unsigned)T);
    if (vec)
        GPTC_DISPATCH_DTYPE(dt, W, kv_store_kernel<W, true><<<grid, 256, 0, st>>>(qkv, epi));
    else
        GPTC_DISPATCH_DTYPE(dt, W, kv_store_kernel<W, false><<<grid, 256, 0, st>>>(qkv, epi));
    return cudaGetLastError();
}
