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
 * replayed from a CUDA graph. That kernel is the fallback; two faster ones
 * take the usual shapes:
 *   - split (T < ATT_SPLIT_MAXT, D a multiple of 8): flash-decoding. A block
 *     per (head, query, chunk of ATT_CHUNK keys); the grid covers max_len and
 *     blocks past the query's position exit, so the graph stays valid. Each
 *     block writes its chunk's max, sum and unnormalised output to scratch;
 *     the last block of a (head, query) to finish (an atomic ticket) merges
 *     them and resets the ticket. A session's blocks of a (head, query) are
 *     one cluster on sm_90 instead: the partials go into the first block's
 *     shared memory, which merges them after a cluster barrier. A batch's
 *     decode pass of many (head, query) pairs runs the same sums as one
 *     block a pair, a warp a chunk, merged in its shared memory
 *     (attn_warp_kernel: no tickets, no block-wide reductions).
 *   - tiled (larger T, D <= 128): a block per (head, 64 queries) walks the
 *     keys in tiles of 64 through shared memory with an online softmax, so
 *     each K/V row is read once per 64 queries instead of once per query.
 *     For fp16 and bf16 with D = 64 the products run on tensor cores
 *     (mma.sync, attn_mma_kernel); fp32 uses CUDA cores (attn_tile_kernel).
 * Every kernel finds the queries' positions and K/V rows through a
 * cuda_kv_map: a session's contiguous cache or the batch engine's paged one
 * (a block table per sequence). The map changes where a row is read from,
 * never the arithmetic: a query gets the same bits from either cache.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.cuh"
#include "kernels.cuh"

#define ATT_THREADS 256

/* Query t's position, and the block table of its sequence (NULL: contiguous). */
__device__ __forceinline__ int q_pos(const cuda_kv_map &m, int t) {
    return m.tables ? m.pos[t] : *m.pos + t;
}
__device__ __forceinline__ const int32_t *q_table(const cuda_kv_map &m, int t) {
    return m.tables ? m.tables + m.tab[t] : NULL;
}
/* The cache row of position j; only positions the sequence holds may be asked. */
__device__ __forceinline__ size_t kv_row(const int32_t *table, int bs, int j) {
    return table ? (size_t)table[j / bs] * bs + j % bs : (size_t)j;
}

/* Shared memory layout, in floats: q (D), red (32), part (ATT_THREADS), scores (max_len). */
size_t cuda_attention_smem(int D, int max_len) {
    return ((size_t)D + 32 + ATT_THREADS + (size_t)max_len) * sizeof(float);
}

template <typename T>
__global__ void __launch_bounds__(ATT_THREADS)
    attention_kernel(T *out, const float *qkv, const T *kc, const T *vc, cuda_kv_map m, int C,
                     int D, float scale) {
    extern __shared__ float sm[];
    float *q = sm, *red = q + D, *part = red + 32, *sc = part + ATT_THREADS;
    int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    int L = q_pos(m, t) + 1; /* causal: this position and all before it */
    const int32_t *tb = q_table(m, t);
    int bs = m.block_size;
    size_t hoff = (size_t)h * D;

    const float *qr = qkv + (size_t)t * 3 * C + hoff;
    for (int d = tid; d < D; d += blockDim.x) q[d] = qr[d];
    __syncthreads();

    for (int j = warp; j < L; j += nw) {
        const T *kr = kc + kv_row(tb, bs, j) * C + hoff;
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
            for (int j = g; j < L; j += G) acc += sc[j] * to_f(vc[kv_row(tb, bs, j) * C + hoff + d]);
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
            for (int j = 0; j < L; j++) acc += sc[j] * to_f(vc[kv_row(tb, bs, j) * C + hoff + d]);
            orow[d] = from_f<T>(acc * inv);
        }
    }
}

/* ---- split (flash-decoding) kernel ---- */

#define SPLIT_THREADS 128
#define ATT_SPLIT_BLOCKS 1024 /* an H100's 132 SMs hold 7 blocks each */

size_t cuda_attention_split_floats(int NH, int D, int T, int max_len) {
    size_t S = (size_t)(max_len + ATT_CHUNK - 1) / ATT_CHUNK;
    return (size_t)NH * (size_t)T * S * (size_t)(D + 2);
}

size_t cuda_attention_scratch_floats(int NH, int D, int max_len) {
    return cuda_attention_split_floats(NH, D, ATT_SPLIT_MAXT, max_len);
}

/* K chunks of 8 a thread holds in registers for its key (half the row):
 * D <= 64. Longer rows load them in the scoring loop. */
#define SPLIT_KPRE 4

/* The chunks of a (head, query) in one thread-block cluster (sm_90, a
 * session's cache): a block's partials go into the shared memory of the
 * cluster's first block, which merges them after one cluster barrier - no
 * scratch, no ticket, no second trip through L2. The merge is the ticket
 * path's, in the same chunk order on the same values, so the two give the
 * same bits (a batch's paged pass keeps the tickets). Up to 16 blocks a
 * cluster (split_cluster_ok), so that a 1024-position context is a chunk a
 * block. */
#define SPLIT_CLUSTER_SMEM (32 * 1024) /* the partials' most: S x (D + 2) floats */

/* 8 elements from shared memory as fp32 (load8 reads global memory). */
__device__ __forceinline__ void lds8(const float *p, float v[8]) {
    float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void lds8(const __half *p, float v[8]) {
    cvt8<__half>(*reinterpret_cast<const uint4 *>(p), v);
}
__device__ __forceinline__ void lds8(const __nv_bfloat16 *p, float v[8]) {
    cvt8<__nv_bfloat16>(*reinterpret_cast<const uint4 *>(p), v);
}
/* attn_split_kernel<PRE = 4>'s row stride in its shared K / V rows, and
 * the bytes of both chunks' rows. */
template <typename T> __host__ __device__ __forceinline__ int split_smem_row(int D) {
    return D + 16 / (int)sizeof(T);
}
template <typename T> static size_t split_smem_bytes(int D) {
    return (size_t)2 * ATT_CHUNK * split_smem_row<T>(D) * sizeof(T);
}
/* attn_split_kernel's static shared memory (q, p, red, accs, last): what
 * its dynamic part may add within a block's default 48 KB. */
#define SPLIT_STATIC_SMEM ((256 + ATT_CHUNK + 32 + SPLIT_THREADS * 8 + 1) * 4)
/* A cluster's partials (S x (D + 2) floats) rounded up to 16 bytes, where
 * the rows start (cp.async's destinations are 16-byte aligned). */
__host__ __device__ __forceinline__ size_t split_part_floats(int S, int D) {
    return ((size_t)S * (D + 2) + 3) & ~(size_t)3;
}

/* GRP: a block of up to SPLIT_GROUPS_MAX groups of SPLIT_THREADS, one
 * (head, query) a block, the groups taking its chunks side by side and
 * merging them in the block's shared memory - a batch pass's chunks without
 * tickets or a cluster. A group's own scratch: q, p, red, accs. */
#define SPLIT_GROUPS_MAX 8
__host__ __device__ __forceinline__ size_t split_group_floats(int D) {
    return ((size_t)D + ATT_CHUNK + 32 + SPLIT_THREADS * 8 + 3) & ~(size_t)3;
}

/* A group's threads, the block's without GRP (read where used: held in a
 * register from the kernel's start, it changed the other kernels' code). */
template <bool GRP> __device__ __forceinline__ unsigned split_nthr() {
    return GRP ? SPLIT_THREADS : blockDim.x;
}
/* A group's barrier (named barrier 1 + gi of SPLIT_THREADS threads) under
 * GRP, the block's otherwise; and block_max (MAX) / block_sum over a group,
 * the same shuffles and the same order as over a block of SPLIT_THREADS. */
template <bool GRP> __device__ __forceinline__ void split_sync(int gi) {
    if constexpr (GRP) asm volatile("bar.sync %0, %1;" ::"r"(gi + 1), "n"(SPLIT_THREADS) : "memory");
    else __syncthreads();
}
template <bool GRP, bool MAX> __device__ __forceinline__ float split_reduce(float v, float *red, int gi) {
    if constexpr (!GRP) return MAX ? block_max(v, red) : block_sum(v, red);
    return warps_reduce<MAX, SPLIT_THREADS>(v, red, [gi] { split_sync<GRP>(gi); });
}

/* One chunk's max mk, sum lk and unnormalised output ok into the running
 * (M, Ls, o) of the online softmax: every split path (tickets, clusters,
 * groups, attn_warp_kernel) merges its chunks with it, in chunk order, so
 * that a query gets the same bits from each. */
__device__ __forceinline__ void merge_chunk(float &M, float &Ls, float &o, float mk, float lk, float ok) {
    float Mn = fmaxf(M, mk), a = expf(M - Mn), b = expf(mk - Mn);
    Ls = Ls * a + lk * b;
    o = o * a + ok * b;
    M = Mn;
}

/* PAGED: the map has block tables (a template parameter, so that the
 * session's decode step keeps the registers it had without them).
 * CLUSTER: gridDim.z blocks a cluster, the partials merged through shared
 * memory (dynamic: S x (D + 2) floats). PRE: which rows are held in
 * registers ahead of their use, K (1) and V (2): a row not held is loaded
 * where it is summed, the same values in the same order, in fewer registers
 * (more blocks an SM, for a batch pass's thousand blocks). */
template <typename T, bool PAGED, bool CLUSTER, int PRE = 3, bool GRP = false>
__global__ void __launch_bounds__(GRP ? SPLIT_THREADS * SPLIT_GROUPS_MAX : SPLIT_THREADS)
    attn_split_kernel(T *out, const float *qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                      cuda_kv_map km, int C, int D, float scale, float *part, int *tickets, int S) {
    __shared__ float q0[GRP ? 1 : 256], p0[GRP ? 1 : ATT_CHUNK], red0[GRP ? 1 : 32],
        accs0[GRP ? 1 : SPLIT_THREADS * 8];
    __shared__ int last;
    extern __shared__ float4 dyn4[]; /* CLUSTER, GRP: the partials (the first block's are the merge's); then SMEM's rows */
    float *cpart = reinterpret_cast<float *>(dyn4);
    /* GRP: a group of SPLIT_THREADS threads a chunk, NG groups a block and
     * gridDim.z blocks a (head, query), chunk c in block (c / NG) % gridDim.z,
     * group c % NG: a context of at most NG chunks is the first block's
     * alone, merged in its shared memory; a longer one takes tickets (every
     * chunk's partials through global memory, as without GRP). Each group's
     * scratch (q, p, red, accs) and rows follow the partials. SZ: the
     * stride from a block's (group's) chunk to its next. */
    int gi = GRP ? (int)(threadIdx.x / SPLIT_THREADS) : 0;
    int NG = GRP ? (int)(blockDim.x / SPLIT_THREADS) : 1;
    int SZ = GRP ? NG * (int)gridDim.z : (int)gridDim.z;
    int h = blockIdx.x, t = blockIdx.y, s = GRP ? (int)blockIdx.z * NG + gi : (int)blockIdx.z;
    int tid = GRP ? (int)(threadIdx.x % SPLIT_THREADS) : (int)threadIdx.x;
    float *q = q0, *p = p0, *red = red0, *accs = accs0;
    if constexpr (GRP) {
        q = cpart + split_part_floats(S, D) + (size_t)gi * split_group_floats(D);
        p = q + D, red = p + ATT_CHUNK, accs = red + 32;
    }
    /* Cluster barrier phase 1: every block has started (its shared memory
     * exists) before any block stores into another's; phase 2: every
     * partial stored, before the first block merges. Waited on only where
     * there is a merge (ns > 1). */
    if (CLUSTER) cluster_arrive_relaxed();
    /* Before the wait: the positions were set before the previous kernel
     * ran (the step's argmax, a pass's upload), and so were a session's
     * cache rows below *pos - the previous kernel (the QKV product) writes
     * only the pass's own rows. Those old rows' K and V are fetched now,
     * while it finishes; the pass's rows and q after the wait, together (one
     * round trip, not q's and then K's). A paged pass's rows likewise when
     * each query is its sequence's only token (km.solo, a decode pass);
     * otherwise all after the wait (its new rows are not told apart). */
    int L = (PAGED ? km.pos[t] : *km.pos + t) + 1;
    int ns = (L + ATT_CHUNK - 1) / ATT_CHUNK;
    if (s >= ns) {
        /* an exit counts as the trigger; in a cluster that merges, an
         * arrival first (the first block waits for every block's). A
         * group's exit leaves the block's barriers to the others (they
         * wait for non-exited threads: PTX ISA, barrier). */
        if (CLUSTER && ns > 1) cluster_wait(), cluster_arrive();
        return;
    }
    int fresh = PAGED ? (km.solo ? L - 1 : 0) : *km.pos;
    const int32_t *tb = PAGED ? q_table(km, t) : NULL;
    int bs = km.block_size;
    size_t hoff = (size_t)h * D;
    /* Output layout: groups of nc threads, each thread 8 dims of every
     * groups-th key; V rows of up to 4 keys per thread are fetched with the
     * K rows, rather than after the softmax. Scores: two threads per key,
     * each half of the row's 16-byte chunks. */
    int nc = D / 8, groups = SPLIT_THREADS / nc, g = tid / nc, c = tid % nc;
    int key = tid >> 1, half = tid & 1;
    bool kreg = (PRE & 1) && nc <= 2 * SPLIT_KPRE;
    float vpre[4][8], kpre[SPLIT_KPRE][8];
    /* SMEM (PRE 4): the chunk's K and V rows copied into shared memory by
     * cp.async, all in flight at once, the old ones before the wait - the
     * loads of the prefetch registers without their registers. The sums
     * read the same values in the same order. */
    constexpr bool SMEM = PRE == 4 || PRE == 8;
    /* PRE 8: two such buffers, a block that takes several chunks copying
     * the next one's rows while it sums this one's. */
    constexpr bool TWO = PRE == 8;
    int DS = split_smem_row<T>(D); /* a row's stride there: 16 bytes of padding, 4 banks a key further */
    T *ks0 = reinterpret_cast<T *>(cpart + (CLUSTER ? split_part_floats(S, D) : 0));
    if (GRP)
        ks0 = reinterpret_cast<T *>(cpart + split_part_floats(S, D) + (size_t)NG * split_group_floats(D)) +
              (size_t)gi * 2 * ATT_CHUNK * DS;
    T *ks = ks0, *vs = ks + (size_t)ATT_CHUNK * DS;
    int nu = D * (int)sizeof(T) / 16; /* 16-byte pieces of a row */
    /* Chunk rows in [lo, hi) only. */
    const int NV = PRE & 2 ? 4 : 0; /* V rows a thread holds ahead */
    auto fetch = [&](int start, int nk, int lo, int hi, T *kd) {
        if constexpr (SMEM) {
            T *vd = kd + (size_t)ATT_CHUNK * DS;
            for (int u = tid; u < nk * nu; u += split_nthr<GRP>()) {
                int k = u / nu, pc = u - k * nu, j = start + k;
                if (j >= lo && j < hi) {
                    size_t r = kv_row(tb, bs, j) * C + hoff;
                    cp_async16(reinterpret_cast<char *>(kd + (size_t)k * DS) + pc * 16,
                               reinterpret_cast<const char *>(kc + r) + pc * 16, 16);
                    cp_async16(reinterpret_cast<char *>(vd + (size_t)k * DS) + pc * 16,
                               reinterpret_cast<const char *>(vc + r) + pc * 16, 16);
                }
            }
        } else {
#pragma unroll
            for (int u = 0; u < NV; u++) {
                int k = g + u * groups, j = start + k;
                if (g < groups && k < nk && j >= lo && j < hi)
                    load8(vc + kv_row(tb, bs, j) * C + hoff + c * 8, vpre[u]);
            }
            int j = start + key;
            if (kreg && key < nk && j >= lo && j < hi) {
                const T *kr = kc + kv_row(tb, bs, j) * C + hoff;
#pragma unroll
                for (int i = 0; i < SPLIT_KPRE; i++)
                    if (half + 2 * i < nc) load8(kr + (half + 2 * i) * 8, kpre[i]);
            }
        }
    };
    fetch(s * ATT_CHUNK, min(ATT_CHUNK, L - s * ATT_CHUNK), 0, fresh, ks);
    pdl_wait();
    pdl_trigger();
    fetch(s * ATT_CHUNK, min(ATT_CHUNK, L - s * ATT_CHUNK), fresh, INT_MAX, ks);
    const float *qr = qkv + (size_t)t * 3 * C + hoff;
    for (int d = tid; d < D; d += split_nthr<GRP>()) q[d] = qr[d] * scale;
    if (SMEM) cp_async_wait_all();
    split_sync<GRP>(gi);
    size_t row = (size_t)h * gridDim.y + t;
    /* Chunks s, s + SZ, ...: each the same sums, whichever block (group)
     * takes it. */
    for (int it = 0;; s += SZ, it++) {
        bool first = it == 0;
        int start = s * ATT_CHUNK, nk = min(ATT_CHUNK, L - start);
        if (TWO) {
            /* this chunk's rows were copied during the last one's sums
             * (the barrier at its end freed the other buffer) */
            if (!first) cp_async_wait_all(), split_sync<GRP>(gi);
            ks = ks0 + (size_t)(it & 1) * 2 * ATT_CHUNK * DS, vs = ks + (size_t)ATT_CHUNK * DS;
            int nx = s + SZ;
            if (nx < ns) {
                T *kn = ks0 + (size_t)((it + 1) & 1) * 2 * ATT_CHUNK * DS;
                fetch(nx * ATT_CHUNK, min(ATT_CHUNK, L - nx * ATT_CHUNK), 0, INT_MAX, kn);
            }
        } else if (!first) {
            fetch(start, nk, 0, INT_MAX, ks);
            if (SMEM) cp_async_wait_all(), split_sync<GRP>(gi);
        }
        float sc = 0.0f;
        if (key < nk) {
            if (kreg) {
#pragma unroll
                for (int i = 0; i < SPLIT_KPRE; i++)
                    if (half + 2 * i < nc) {
                        int cc = half + 2 * i;
#pragma unroll
                        for (int e = 0; e < 8; e++) sc += q[cc * 8 + e] * kpre[i][e];
                    }
            } else {
                const T *kr = SMEM ? ks + (size_t)key * DS : kc + kv_row(tb, bs, start + key) * C + hoff;
#pragma unroll 4
                for (int cc = half; cc < nc; cc += 2) {
                    float kv[8];
                    if (SMEM) lds8(kr + cc * 8, kv);
                    else load8(kr + cc * 8, kv);
#pragma unroll
                    for (int e = 0; e < 8; e++) sc += q[cc * 8 + e] * kv[e];
                }
            }
        }
        sc += __shfl_xor_sync(0xffffffffu, sc, 1);
        float sv = key < nk ? sc : -INFINITY;
        float m = split_reduce<GRP, true>(sv, red, gi);
        float pv = key < nk ? expf(sv - m) : 0.0f;
        if (half == 0) p[key] = pv;
        float l = split_reduce<GRP, false>(half == 0 ? pv : 0.0f, red, gi); /* its barriers publish p */

        if (g < groups) {
            float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
            for (int u = 0; u < NV; u++) {
                int k = g + u * groups;
                if (k < nk) {
                    float pk = p[k];
#pragma unroll
                    for (int i = 0; i < 8; i++) a[i] += pk * vpre[u][i];
                }
            }
#pragma unroll 4
            for (int k = g + NV * groups; k < nk; k += groups) {
                float vv[8];
                if (SMEM) lds8(vs + (size_t)k * DS + c * 8, vv);
                else load8(vc + kv_row(tb, bs, start + k) * C + hoff + c * 8, vv);
                float pk = p[k];
#pragma unroll
                for (int i = 0; i < 8; i++) a[i] += pk * vv[i];
            }
#pragma unroll
            for (int i = 0; i < 8; i++) accs[g * D + c * 8 + i] = a[i];
        }
        split_sync<GRP>(gi);
        if (ns == 1) {
            /* The only chunk (a context of at most ATT_CHUNK keys): the merge
             * of one chunk gives o / l exactly (its weights are exp(0) = 1 and
             * 0), so no partials, ticket or second pass. */
            T *orow = out + (size_t)t * C + hoff;
            for (int d = tid; d < D; d += split_nthr<GRP>()) {
                float o = 0.0f;
                for (int k = 0; k < groups; k++) o += accs[k * D + d];
                orow[d] = from_f<T>(o / l);
            }
            return;
        }
        if (CLUSTER && first) cluster_wait();
        float *po = CLUSTER ? cluster_map(cpart, 0) + s * (D + 2)
                    : GRP   ? cpart + s * (D + 2)
                            : part + (row * S + s) * (size_t)(D + 2);
        for (int d = tid; d < D; d += split_nthr<GRP>()) {
            float o = 0.0f;
            for (int k = 0; k < groups; k++) o += accs[k * D + d];
            po[d] = o;
        }
        if (tid == 0) po[D] = m, po[D + 1] = l;
        if (CLUSTER || GRP) {
            if (s + SZ >= ns) break;
            split_sync<GRP>(gi); /* accs and p are the next chunk's */
            continue;
        }

        /* The last block of this (head, query) merges the chunks. */
        __threadfence();
        __syncthreads();
        if (tid == 0) last = atomicAdd(&tickets[row], 1) == ns - 1;
        __syncthreads();
        if (last) break;
        if (s + SZ >= ns) return;
    }
    if (GRP) {
        __syncthreads(); /* every group's partials stored */
        if (ns > NG) {
            /* Several blocks: this one's partials to the scratch (copied
             * here rather than stored there by the groups, whose address
             * arithmetic cost the loop registers) by the groups that had a
             * chunk (the others have exited: its first nw threads), and a
             * ticket that counts chunks - the block adds its own. */
            int nb = 0, nw = min(NG, ns - (int)blockIdx.z * NG) * SPLIT_THREADS;
            for (int c0 = (int)blockIdx.z * NG; c0 < ns; c0 += SZ) {
                int n = min(NG, ns - c0) * (D + 2);
                float *dst = part + (row * S + c0) * (size_t)(D + 2);
                const float *src = cpart + c0 * (D + 2);
                for (int i = threadIdx.x; i < n; i += nw) dst[i] = src[i];
                nb += min(NG, ns - c0);
            }
            __threadfence();
            __syncthreads();
            if (threadIdx.x == 0) last = atomicAdd(&tickets[row], nb) == ns - nb;
            __syncthreads();
            if (!last) return;
            __threadfence();
            if (threadIdx.x == 0) tickets[row] = 0;
        }
        if (gi != 0) return;
    } else if (CLUSTER) {
        cluster_arrive();
        if (blockIdx.z != 0) return;
        cluster_wait();
    } else {
        __threadfence();
        if (tid == 0) tickets[row] = 0;
    }
    /* One pass per output dim, merging chunk by chunk (online softmax),
     * so the loads of all chunks can be in flight together; the partials in
     * this block's shared memory (CLUSTER: the first block's), or in the
     * scratch. */
    const float *pb = CLUSTER || (GRP && ns <= NG) ? cpart : part + row * S * (size_t)(D + 2);
    T *orow = out + (size_t)t * C + hoff;
    for (int d = tid; d < D; d += split_nthr<GRP>()) {
        float M = -INFINITY, Ls = 0.0f, o = 0.0f;
#pragma unroll 4
        for (int k = 0; k < ns; k++) {
            const float *pk = pb + (size_t)k * (D + 2);
            float mk, lk, ok;
            if (CLUSTER || (GRP && ns <= NG)) mk = pk[D], lk = pk[D + 1], ok = pk[d];
            else mk = __ldcg(pk + D), lk = __ldcg(pk + D + 1), ok = __ldcg(pk + d);
            merge_chunk(M, Ls, o, mk, lk, ok);
        }
        orow[d] = from_f<T>(o / Ls);
    }
}

/* ---- warp-a-chunk kernel (a batch's decode pass) ---- */

/*
 * One block a (head, query), W warps taking its chunks of ATT_CHUNK keys
 * (w, w + W, ...), the chunks merged in the block's shared memory after its
 * one barrier: no tickets, no partials through L2, no block-wide reductions
 * per chunk. For
 * a pass of many (head, query) pairs whose contexts are a few chunks (gpt2
 * batch 32 at 128 + 128 tokens: 384 blocks of 4 warps where the split
 * kernel had 1,152 of 128 threads and a ticket each). What the split
 * kernel spent at gpt2 batch 32, 128 + 64 tokens, H200, step ms less with
 * each stage ended early (session 22): the ticket and the merge 0.030, the
 * partials 0.006, P x V 0.011, the scores and their block reductions 0.024,
 * the new rows 0.006, the old rows' copies 0.024, its grid over an empty
 * kernel's 0.014 - of a 0.468 ms step.
 *
 * The sums are attn_split_kernel's, in its order, so that a sequence gets
 * the same bits in a batch as alone (a session's split kernel): a key's
 * score is its two halves' chains (the 16-byte pieces 0, 2, 4, 6 and 1, 3,
 * 5, 7), added; the softmax's sum the same tree as block_sum's over four
 * warps of two threads a key; P x V sixteen chains (keys g, g + 16, ...)
 * summed in order; the chunks merged as the ticket path merges them.
 * D = 64 (every GPT-2 size), 16-bit K / V.
 */
#define WARP_D 64
#define WARP_MAX_S 16 /* chunks: GPT-2's n_ctx of 1024 */
#define WARP_MAX_W 8  /* warps a block */
/* A warp's shared memory: its chunk's K and V rows (128 bytes each, the
 * 16-byte pieces of row k at pc ^ (k & 7), so that 8 lanes reading piece
 * pc of 8 rows hit different banks), then q and p. */
#define WARP_ROWS_BYTES (2 * ATT_CHUNK * WARP_D * 2)
#define WARP_SMEM_BYTES (WARP_ROWS_BYTES + 2 * 64 * 4)
/* The block's partials first (S x (D + 2) floats, to 16 bytes), then each warp's part. */
__host__ __device__ __forceinline__ size_t warp_part_bytes(int S) {
    return ((size_t)S * (WARP_D + 2) * 4 + 15) & ~(size_t)15;
}
static size_t warp_smem(int S, int W) { return warp_part_bytes(S) + (size_t)W * WARP_SMEM_BYTES; }

template <typename T>
__global__ void __launch_bounds__(32 * WARP_MAX_W)
    attn_warp_kernel(T *out, const float *qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                     cuda_kv_map km, int C, float scale, int S) {
    extern __shared__ float4 dyn4[];
    int lane = threadIdx.x & 31, w = (int)(threadIdx.x >> 5), W = (int)(blockDim.x >> 5);
    int h = blockIdx.x, t = blockIdx.y;
    float *part = reinterpret_cast<float *>(dyn4);
    char *wb = reinterpret_cast<char *>(dyn4) + warp_part_bytes(S) + (size_t)w * WARP_SMEM_BYTES;
    char *ks = wb, *vs = wb + WARP_ROWS_BYTES / 2;
    float *q = reinterpret_cast<float *>(wb + WARP_ROWS_BYTES), *p = q + WARP_D;
    float *accs = reinterpret_cast<float *>(ks); /* 16 x 64 floats, once the scores are done */
    /* Positions and block tables were set before the previous kernel ran,
     * and so were the old rows (as in attn_split_kernel). */
    int L = km.pos[t] + 1, ns = (L + ATT_CHUNK - 1) / ATT_CHUNK;
    if (w >= ns) return; /* an exit counts as the trigger */
    int fresh = km.solo ? L - 1 : 0;
    const int32_t *tb = q_table(km, t);
    int bs = km.block_size;
    size_t hoff = (size_t)h * WARP_D;
    T *orow = out + (size_t)t * C + hoff;
    auto fetch = [&](int start, int nk, int lo, int hi) {
        for (int u = lane; u < nk * 8; u += 32) {
            int k = u >> 3, pc = u & 7, j = start + k;
            if (j >= lo && j < hi) {
                size_t r = kv_row(tb, bs, j) * C + hoff;
                int o = k * 128 + ((pc ^ (k & 7)) << 4);
                cp_async16(ks + o, reinterpret_cast<const char *>(kc + r) + pc * 16, 16);
                cp_async16(vs + o, reinterpret_cast<const char *>(vc + r) + pc * 16, 16);
            }
        }
    };
    /* Chunks w, w + W, ... */
    for (int ch = w; ch < ns; ch += W) {
        int start = ch * ATT_CHUNK, nk = min(ATT_CHUNK, L - start);
        if (ch == w) {
            fetch(start, nk, 0, fresh);
            pdl_wait();
            pdl_trigger();
            fetch(start, nk, fresh, INT_MAX);
            const float *qr = qkv + (size_t)t * 3 * C + hoff;
            q[lane] = qr[lane] * scale;
            q[lane + 32] = qr[lane + 32] * scale;
        } else {
            fetch(start, nk, 0, INT_MAX);
        }
        cp_async_wait_all();
        __syncwarp();

        /* Keys lane and lane + 32. */
        float sv[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int key = lane + 32 * r;
            float s0 = 0.0f, s1 = 0.0f;
            if (key < nk) {
                const char *kr = ks + key * 128;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float k0[8], k1[8];
                    lds8(reinterpret_cast<const T *>(kr + (((2 * i) ^ (key & 7)) << 4)), k0);
                    lds8(reinterpret_cast<const T *>(kr + (((2 * i + 1) ^ (key & 7)) << 4)), k1);
#pragma unroll
                    for (int e = 0; e < 8; e++) s0 += q[2 * i * 8 + e] * k0[e];
#pragma unroll
                    for (int e = 0; e < 8; e++) s1 += q[(2 * i + 1) * 8 + e] * k1[e];
                }
            }
            s0 += s1;
            sv[r] = key < nk ? s0 : -INFINITY;
        }
        float m = warp_max(fmaxf(sv[0], sv[1]));
        float pa = lane < nk ? expf(sv[0] - m) : 0.0f, pb = lane + 32 < nk ? expf(sv[1] - m) : 0.0f;
        p[lane] = pa;
        p[lane + 32] = pb;
        /* block_sum's tree: keys 16v .. 16v + 15 (warp v of the split
         * kernel, two threads a key) by offsets 8, 4, 2, 1, then (v0 + v2)
         * + (v1 + v3). */
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) {
            pa += __shfl_xor_sync(0xffffffffu, pa, o);
            pb += __shfl_xor_sync(0xffffffffu, pb, o);
        }
        pa += pb;
        float l = pa + __shfl_xor_sync(0xffffffffu, pa, 16);
        __syncwarp(); /* p published; the K rows free for accs */

        /* Lane (gw, c): dims c * 8 .. + 7 of chains g = gw, gw + 4, gw +
         * 8, gw + 12, each over keys g, g + 16, g + 32, g + 48. */
        int gw = lane >> 3, c = lane & 7;
        float a[4][8];
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int g = gw + 4 * r;
#pragma unroll
            for (int i = 0; i < 8; i++) a[r][i] = 0.0f;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int k = g + 16 * u;
                if (k < nk) {
                    float vv[8];
                    lds8(reinterpret_cast<const T *>(vs + k * 128 + ((c ^ (k & 7)) << 4)), vv);
                    float pk = p[k];
#pragma unroll
                    for (int i = 0; i < 8; i++) a[r][i] += pk * vv[i];
                }
            }
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            float4 *dst = reinterpret_cast<float4 *>(accs + (gw + 4 * r) * WARP_D + c * 8);
            dst[0] = make_float4(a[r][0], a[r][1], a[r][2], a[r][3]);
            dst[1] = make_float4(a[r][4], a[r][5], a[r][6], a[r][7]);
        }
        __syncwarp();
        float o0 = 0.0f, o1 = 0.0f;
#pragma unroll
        for (int g = 0; g < 16; g++) o0 += accs[g * WARP_D + lane], o1 += accs[g * WARP_D + lane + 32];
        if (ns == 1) {
            /* the only chunk: o / l, as the split kernel writes it */
            orow[lane] = from_f<T>(o0 / l);
            orow[lane + 32] = from_f<T>(o1 / l);
            return;
        }
        float *po = part + ch * (WARP_D + 2);
        po[lane] = o0;
        po[lane + 32] = o1;
        if (lane == 0) po[WARP_D] = m, po[WARP_D + 1] = l;
        __syncwarp(); /* accs read: the next chunk's rows may land */
    }
    __syncthreads(); /* every chunk's partials (warps past ns have exited) */
    int alive = min(ns, W) * 32;
    for (int d = threadIdx.x; d < WARP_D; d += alive) {
        float M = -INFINITY, Ls = 0.0f, o = 0.0f;
#pragma unroll 4
        for (int k = 0; k < ns; k++) {
            const float *pk = part + k * (WARP_D + 2);
            float mk = pk[WARP_D], lk = pk[WARP_D + 1], ok = pk[d];
            merge_chunk(M, Ls, o, mk, lk, ok);
        }
        orow[d] = from_f<T>(o / Ls);
    }
}

/* ---- tiled kernel ---- */

#define TILE_Q 64 /* queries per block: 8 warps x TILE_QPW */
#define TILE_QPW 8
#define TILE_K 64 /* keys per shared-memory tile */
#define TILE_THREADS 256

static int tile_dq(int D) { return (D + 3) & ~3; }
static size_t tile_smem(int D) {
    size_t Dq = (size_t)tile_dq(D);
    return (TILE_Q * Dq + TILE_K * (Dq + 1) + TILE_K * (size_t)D +
            (size_t)(TILE_THREADS / 32) * TILE_QPW * TILE_K) *
           sizeof(float);
}

/*
 * Each warp owns TILE_QPW queries; per key tile a lane scores keys lane and
 * lane + 32 against all of them (q read as float4 over 4 dims, broadcast),
 * then accumulates the output dims lane + 32k (k < KD) over the tile's keys
 * with the probabilities read as float4 over 4 keys. K rows are padded to
 * Dq + 1 floats so the lanes' rows fall in different banks.
 */
template <typename T, int KD>
__global__ void __launch_bounds__(TILE_THREADS)
    attn_tile_kernel(T *out, const float *qkv, const T *__restrict__ kc, const T *__restrict__ vc,
                     cuda_kv_map m, int T_, int C, int D, float scale) {
    extern __shared__ float4 sm4[];
    int Dq = (D + 3) & ~3, Dk = Dq + 1;
    float *qs = reinterpret_cast<float *>(sm4), *ks = qs + TILE_Q * Dq, *vs = ks + TILE_K * Dk;
    float *ps = vs + TILE_K * D;
    /* The longest (last) query tiles first. */
    int h = blockIdx.x, t0 = (gridDim.y - 1 - blockIdx.y) * TILE_Q, tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5;
    pdl_wait();
    int P0 = q_pos(m, 0), bs = m.block_size;
    const int32_t *tb = q_table(m, 0);
    size_t hoff = (size_t)h * D;
    for (int i = tid; i < TILE_Q * Dq; i += TILE_THREADS) {
        int r = i / Dq, d = i % Dq, t = t0 + r;
        qs[i] = t < T_ && d < D ? qkv[(size_t)t * 3 * C + hoff + d] * scale : 0.0f;
    }
    float *pw = ps + warp * TILE_QPW * TILE_K;
    int qp0 = P0 + t0 + warp * TILE_QPW; /* position of the warp's first query */
    float mr[TILE_QPW], lr[TILE_QPW], acc[TILE_QPW][KD];
#pragma unroll
    for (int r = 0; r < TILE_QPW; r++) {
        mr[r] = -INFINITY;
        lr[r] = 0.0f;
#pragma unroll
        for (int k = 0; k < KD; k++) acc[r][k] = 0.0f;
    }
    int lastkey = P0 + min(t0 + TILE_Q, T_) - 1;
    int nc = D / 8;
    for (int j0 = 0; j0 <= lastkey; j0 += TILE_K) {
        __syncthreads(); /* the previous tile is consumed (and q is staged) */
        if ((D & 7) == 0) {
            for (int i = tid; i < TILE_K * nc; i += TILE_THREADS) {
                int j = i / nc, c = i % nc;
                float kv[8], vv[8];
                if (j0 + j <= lastkey) {
                    size_t g = kv_row(tb, bs, j0 + j) * C + hoff + c * 8;
                    load8(kc + g, kv);
                    load8(vc + g, vv);
                } else {
#pragma unroll
                    for (int e = 0; e < 8; e++) kv[e] = vv[e] = 0.0f;
                }
#pragma unroll
                for (int e = 0; e < 8; e++) ks[j * Dk + c * 8 + e] = kv[e];
                float4 *v4 = reinterpret_cast<float4 *>(vs + j * D + c * 8);
                v4[0] = make_float4(vv[0], vv[1], vv[2], vv[3]);
                v4[1] = make_float4(vv[4], vv[5], vv[6], vv[7]);
            }
        } else {
            for (int i = tid; i < TILE_K * Dq; i += TILE_THREADS) {
                int j = i / Dq, d = i % Dq;
                bool ok = j0 + j <= lastkey && d < D;
                size_t g = ok ? kv_row(tb, bs, j0 + j) * C + hoff + d : 0;
                ks[j * Dk + d] = ok ? to_f(kc[g]) : 0.0f;
                if (d < D) vs[j * D + d] = ok ? to_f(vc[g]) : 0.0f;
            }
        }
        __syncthreads();
        float s[TILE_QPW][2];
#pragma unroll
        for (int r = 0; r < TILE_QPW; r++) s[r][0] = s[r][1] = 0.0f;
        const float *k0 = ks + lane * Dk, *k1 = ks + (lane + 32) * Dk;
        const float4 *qw = reinterpret_cast<const float4 *>(qs + warp * TILE_QPW * Dq);
        int nq4 = Dq / 4;
#pragma unroll 2
        for (int d4 = 0; d4 < nq4; d4++) {
            float a0 = k0[4 * d4], a1 = k0[4 * d4 + 1], a2 = k0[4 * d4 + 2], a3 = k0[4 * d4 + 3];
            float b0 = k1[4 * d4], b1 = k1[4 * d4 + 1], b2 = k1[4 * d4 + 2], b3 = k1[4 * d4 + 3];
#pragma unroll
            for (int r = 0; r < TILE_QPW; r++) {
                float4 q = qw[r * nq4 + d4];
                s[r][0] += q.x * a0 + q.y * a1 + q.z * a2 + q.w * a3;
                s[r][1] += q.x * b0 + q.y * b1 + q.z * b2 + q.w * b3;
            }
        }
#pragma unroll
        for (int r = 0; r < TILE_QPW; r++) {
            int qp = qp0 + r;
            float sa = j0 + lane <= qp ? s[r][0] : -INFINITY;
            float sb = j0 + lane + 32 <= qp ? s[r][1] : -INFINITY;
            /* Key 0 is in the first tile and visible to every query, so mr
             * is finite from then on. */
            float mn = fmaxf(mr[r], warp_max(fmaxf(sa, sb)));
            float alpha = expf(mr[r] - mn);
            float pa = expf(sa - mn), pb = expf(sb - mn);
            lr[r] = lr[r] * alpha + warp_sum(pa + pb);
            mr[r] = mn;
            pw[r * TILE_K + lane] = pa;
            pw[r * TILE_K + lane + 32] = pb;
#pragma unroll
            for (int k = 0; k < KD; k++) acc[r][k] *= alpha;
        }
        __syncwarp();
        /* Keys past lastkey have p = 0 and zero V rows. */
        int nj4 = (min(TILE_K, lastkey + 1 - j0) + 3) / 4;
        for (int j4 = 0; j4 < nj4; j4++) {
            float v[4][KD];
#pragma unroll
            for (int jj = 0; jj < 4; jj++)
#pragma unroll
                for (int k = 0; k < KD; k++)
                    v[jj][k] = lane + 32 * k < D ? vs[(4 * j4 + jj) * D + lane + 32 * k] : 0.0f;
#pragma unroll
            for (int r = 0; r < TILE_QPW; r++) {
                float4 p = reinterpret_cast<const float4 *>(pw + r * TILE_K)[j4];
#pragma unroll
                for (int k = 0; k < KD; k++)
                    acc[r][k] += p.x * v[0][k] + p.y * v[1][k] + p.z * v[2][k] + p.w * v[3][k];
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < TILE_QPW; r++) {
        int t = t0 + warp * TILE_QPW + r;
        if (t >= T_) continue;
        float inv = 1.0f / lr[r];
        T *orow = out + (size_t)t * C + hoff;
#pragma unroll
        for (int k = 0; k < KD; k++)
            if (lane + 32 * k < D) orow[lane + 32 * k] = from_f<T>(acc[r][k] * inv);
    }
}

/* ---- tensor-core tiled kernel (fp16, D = 64) ---- */

#define MMA_Q 64 /* queries per block: 4 warps x 16 per key group */
#define MMA_K 64 /* keys per tile */
#define MMA_D 64
#define MMA_LD 72 /* half row stride in shared memory: 144 bytes, so ldmatrix's 8 rows hit 8 bank quads */
#define MMA_GROUPS_MAX 4 /* key groups per block (group_sync's barriers) */

static size_t mma_smem(int groups) {
    /* Q, then per key group K and V twice (double-buffered) */
    return (size_t)(MMA_Q + groups * 4 * MMA_K) * MMA_LD * sizeof(__half);
}

/* Barrier of the 128 threads of key group g (ids 1.., 0 is __syncthreads);
 * immediate ids, so the block reserves only the barriers it names. */
__device__ __forceinline__ void group_sync(int g) {
    if (g == 0) asm volatile("bar.sync 1, 128;" ::: "memory");
    else if (g == 1) asm volatile("bar.sync 2, 128;" ::: "memory");
    else if (g == 2) asm volatile("bar.sync 3, 128;" ::: "memory");
    else asm volatile("bar.sync 4, 128;" ::: "memory");
}

/* Two values as the 32-bit operand of an mma (the first in the low half),
 * and two stored values as floats. */
template <typename T> __device__ __forceinline__ uint32_t pack2(float a, float b);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
    __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&h);
}
__device__ __forceinline__ float2 unpack2(const __half *p) {
    return __half22float2(*reinterpret_cast<const __half2 *>(p));
}
__device__ __forceinline__ float2 unpack2(const __nv_bfloat16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}

/*
 * The tiled kernel on tensor cores, flash-attention 2 style. A warp owns 16
 * queries; its Q fragments stay in registers, and per 64-key tile it
 * computes S = Q K^T (mma.sync m16n8k16, fp32 accumulate) into registers,
 * masks, updates the online softmax there (a row's values sit in the 4
 * lanes of a quad), rounds P to T and feeds it straight back as the A
 * operand of O += P V - the accumulator layout of one mma is the operand
 * layout of the next. Only K and V go through shared memory, by cp.async
 * one tile ahead of the products. The block's 64 queries are held by
 * MMA_GROUPS groups of 4 warps, group g taking key tiles g, g + G, ...: the
 * last query tile of a 1024-token prompt walks 16 tiles, and one chain of
 * them was the kernel's critical path (one or two blocks per SM, most of
 * the SM idle). The groups' (max, sum, output) merge in shared memory at
 * the end. The sums: l adds the fp32 p, the product uses p rounded to T
 * (fp16, or bf16: 8 bits of P's mantissa instead of 11).
 */
template <typename T, int MMA_GROUPS>
__global__ void __launch_bounds__(128 * MMA_GROUPS, MMA_GROUPS <= 2 ? 2 : 1)
    attn_mma_kernel(T *out, const float *qkv, const T *kc, const T *vc, cuda_kv_map m, int T_, int C,
                    float scale, const int2 *segs) {
    extern __shared__ float4 smm4[];
    T *qs = reinterpret_cast<T *>(smm4), *kv_all = qs + MMA_Q * MMA_LD;
    int h = blockIdx.x, t0 = (gridDim.y - 1 - blockIdx.y) * MMA_Q, tid = threadIdx.x;
    int lane = tid & 31, warp = tid >> 5, qw = warp & 3, grp = warp >> 2, gtid = tid & 127;
    int g = lane >> 2, tq = lane & 3;
    T *kvs = kv_all + grp * 4 * MMA_K * MMA_LD;
    pdl_wait();
    if (segs) {
        /* Several prompts in one launch (cuda_attention_mma_segs): segment
         * blockIdx.z is the rows (first, count) of the pass, and a block
         * does for its query tile what a launch of that segment alone
         * does - tiles counted from the segment's first row - so the
         * same bits. Tiles past a shorter segment's end have no work. */
        int2 sg = segs[blockIdx.z];
        if (t0 >= sg.y) return;
        T_ = sg.y;
        out += (size_t)sg.x * C;
        qkv += (size_t)sg.x * 3 * C;
        m.pos += sg.x;
        if (m.tab) m.tab += sg.x;
        if (m.fresh) m.fresh = static_cast<const T *>(m.fresh) + (size_t)sg.x * 3 * C;
    }
    int P0 = q_pos(m, 0), bs = m.block_size;
    const int32_t *tb = q_table(m, 0);
    size_t hoff = (size_t)h * MMA_D;
    int lastkey = P0 + min(t0 + MMA_Q, T_) - 1, ntiles = lastkey / MMA_K + 1;
    /* m.fresh: the pass's rows (q, k, v) in fp16, rows of 3C. Its keys
     * (positions P0..) come from there and this block copies its own
     * queries' K/V rows into the cache: no kernel between the product and
     * the attention, and no block waits on another's cache rows. */
    const T *fr = static_cast<const T *>(m.fresh);
    /* Tile jt's K and V into this group's buffer (jt / G) & 1; keys past
     * lastkey zero-filled. */
    auto load_kv = [&](int jt) {
        T *ks = kvs + ((jt / MMA_GROUPS) & 1) * 2 * MMA_K * MMA_LD, *vs = ks + MMA_K * MMA_LD;
#pragma unroll
        for (int i = gtid; i < MMA_K * 8; i += 128) {
            int j = i >> 3, c = i & 7, key = jt * MMA_K + j, ok = key <= lastkey;
            const T *ksrc = kc, *vsrc = vc;
            if (ok && fr && key >= P0) {
                ksrc = fr + (size_t)(key - P0) * 3 * C + C + hoff + c * 8;
                vsrc = ksrc + C;
            } else if (ok) {
                size_t gi = kv_row(tb, bs, key) * C + hoff + c * 8;
                ksrc = kc + gi, vsrc = vc + gi;
            }
            cp_async16(ks + j * MMA_LD + c * 8, ksrc, ok ? 16 : 0);
            cp_async16(vs + j * MMA_LD + c * 8, vsrc, ok ? 16 : 0);
        }
        cp_async_commit();
    };
    if (grp < ntiles) load_kv(grp);
    if (fr) {
        /* q rounded to fp16 by the product, then scaled and rounded again
         * (exact where the scale is a power of two: 1/8 for D = 64). */
        for (int i = tid; i < MMA_Q * MMA_D / 2; i += 128 * MMA_GROUPS) {
            int r = i >> 5, d = (i & 31) * 2, t = t0 + r;
            float2 v = t < T_ ? unpack2(fr + (size_t)t * 3 * C + hoff + d)
                              : make_float2(0.0f, 0.0f);
            *reinterpret_cast<uint32_t *>(qs + r * MMA_LD + d) = pack2<T>(v.x * scale, v.y * scale);
        }
        /* This block's queries' K and V rows of head h into the cache; the
         * kernel reads only rows below P0 there (kc / vc are written only at
         * rows it never reads). */
        T *kw = const_cast<T *>(kc), *vw = const_cast<T *>(vc);
        for (int i = tid; i < MMA_Q * 8; i += 128 * MMA_GROUPS) {
            int r = i >> 3, c = i & 7, t = t0 + r;
            if (t >= T_) continue;
            const T *src = fr + (size_t)t * 3 * C + C + hoff + c * 8;
            size_t dst = kv_row(tb, bs, P0 + t) * C + hoff + c * 8;
            uint4 kv4 = *reinterpret_cast<const uint4 *>(src), vv4 = *reinterpret_cast<const uint4 *>(src + C);
            *reinterpret_cast<uint4 *>(kw + dst) = kv4;
            *reinterpret_cast<uint4 *>(vw + dst) = vv4;
        }
    } else {
        for (int i = tid; i < MMA_Q * MMA_D / 2; i += 128 * MMA_GROUPS) {
            int r = i >> 5, d = (i & 31) * 2, t = t0 + r;
            float2 v = t < T_ ? *reinterpret_cast<const float2 *>(qkv + (size_t)t * 3 * C + hoff + d)
                              : make_float2(0.0f, 0.0f);
            *reinterpret_cast<uint32_t *>(qs + r * MMA_LD + d) = pack2<T>(v.x * scale, v.y * scale);
        }
    }
    __syncthreads();
    uint32_t qf[4][4]; /* A fragments of the warp's 16 x 64 queries, per 16 dims */
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
        ldmatrix_x4<false>(qf[kk], qs + (qw * 16 + (lane & 15)) * MMA_LD + kk * 16 + (lane >> 4) * 8);

    float o[8][4], mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    int qlo = P0 + t0 + qw * 16, qp0 = qlo + g, qp1 = qp0 + 8; /* positions of rows g, g + 8 */
    const float L2E = 1.4426950408889634f; /* e^x as 2^(x log2 e): the hardware exp2 */
    for (int jt = grp; jt < ntiles; jt += MMA_GROUPS) {
        if (jt + MMA_GROUPS < ntiles) {
            load_kv(jt + MMA_GROUPS);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        group_sync(grp);
        int j0 = jt * MMA_K;
        if (j0 <= qlo + 15) { /* some key of the tile is visible to the warp */
            const T *ks = kvs + ((jt / MMA_GROUPS) & 1) * 2 * MMA_K * MMA_LD, *vs = ks + MMA_K * MMA_LD;
            float s[8][4];
#pragma unroll
            for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < 4; kk++)
#pragma unroll
                for (int n = 0; n < 8; n += 2) {
                    uint32_t b[4]; /* keys n*8.. and n*8+8.., dims kk*16 .. +15 */
                    ldmatrix_x4<false>(b, ks + (n * 8 + (lane & 7) + ((lane >> 4) << 3)) * MMA_LD + kk * 16 +
                                              ((lane >> 3) & 1) * 8);
                    mma16816<T>(s[n], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[0], b[1]);
                    mma16816<T>(s[n + 1], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[2], b[3]);
                }
            if (j0 + MMA_K - 1 > qlo) { /* the causal edge crosses this tile */
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    int j = j0 + n * 8 + 2 * tq;
                    if (j > qp0) s[n][0] = -INFINITY;
                    if (j + 1 > qp0) s[n][1] = -INFINITY;
                    if (j > qp1) s[n][2] = -INFINITY;
                    if (j + 1 > qp1) s[n][3] = -INFINITY;
                }
            }
            float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
            for (int n = 0; n < 8; n++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            }
            /* A row may see no key of a tile, nor of its group's tiles
             * before: mx = -inf, then p and alpha are 0 (ml = 0 keeps
             * -inf - -inf out). */
            float ml0 = mx[0] == -INFINITY ? 0.0f : mx[0] * L2E, ml1 = mx[1] == -INFINITY ? 0.0f : mx[1] * L2E;
            float alpha[2] = {exp2f(fmaf(mrow[0], L2E, -ml0)), exp2f(fmaf(mrow[1], L2E, -ml1))};
            mrow[0] = mx[0], mrow[1] = mx[1];
            uint32_t pf[8][2]; /* P rounded to fp16, rows g and g + 8, per 8 keys */
            float ls[2] = {0.0f, 0.0f};
#pragma unroll
            for (int n = 0; n < 8; n++) {
                float p0 = exp2f(fmaf(s[n][0], L2E, -ml0)), p1 = exp2f(fmaf(s[n][1], L2E, -ml0));
                float p2 = exp2f(fmaf(s[n][2], L2E, -ml1)), p3 = exp2f(fmaf(s[n][3], L2E, -ml1));
                ls[0] += p0 + p1;
                ls[1] += p2 + p3;
                pf[n][0] = pack2<T>(p0, p1);
                pf[n][1] = pack2<T>(p2, p3);
            }
            lrow[0] = lrow[0] * alpha[0] + ls[0];
            lrow[1] = lrow[1] * alpha[1] + ls[1];
#pragma unroll
            for (int n = 0; n < 8; n++) {
                o[n][0] *= alpha[0], o[n][1] *= alpha[0];
                o[n][2] *= alpha[1], o[n][3] *= alpha[1];
            }
#pragma unroll
            for (int kk = 0; kk < 4; kk++) /* keys kk*16 .. +15 */
#pragma unroll
                for (int n = 0; n < 8; n += 2) {
                    uint32_t b[4]; /* dims n*8.. and n*8+8.., keys kk*16 .. +15 */
                    ldmatrix_x4<true>(b, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * MMA_LD + n * 8 +
                                             (lane >> 4) * 8);
                    mma16816<T>(o[n], pf[2 * kk][0], pf[2 * kk][1], pf[2 * kk + 1][0], pf[2 * kk + 1][1],
                                     b[0], b[1]);
                    mma16816<T>(o[n + 1], pf[2 * kk][0], pf[2 * kk][1], pf[2 * kk + 1][0],
                                     pf[2 * kk + 1][1], b[2], b[3]);
                }
        }
        group_sync(grp); /* the group's next copy refills this tile's buffer */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
    }
    /* Groups 1.. leave (m, l, o) of each lane in the K/V buffers; group 0
     * merges: out = sum_g o_g e^(m_g - M) / sum_g l_g e^(m_g - M). */
    float *st = reinterpret_cast<float *>(kv_all);
    const int SLOT = 36; /* floats per lane: o (32), m (2), l (2) */
    __syncthreads();
    if (grp > 0) {
        float *p = st + ((size_t)(grp - 1) * 128 + qw * 32 + lane) * SLOT;
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) p[n * 4 + c] = o[n][c];
        p[32] = mrow[0], p[33] = mrow[1], p[34] = lrow[0], p[35] = lrow[1];
    }
    __syncthreads();
    if (grp > 0) return;
#pragma unroll
    for (int k = 1; k < MMA_GROUPS; k++) {
        const float *p = st + ((size_t)(k - 1) * 128 + qw * 32 + lane) * SLOT;
        float a0[2], a1[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mo = p[32 + r], M = fmaxf(mrow[r], mo); /* mrow is finite: group 0 has key 0 */
            a0[r] = exp2f((mrow[r] - M) * L2E);
            a1[r] = exp2f((mo - M) * L2E); /* 0 when the group saw no key */
            lrow[r] = lrow[r] * a0[r] + p[34 + r] * a1[r];
            mrow[r] = M;
        }
#pragma unroll
        for (int n = 0; n < 8; n++) {
            o[n][0] = o[n][0] * a0[0] + p[n * 4 + 0] * a1[0];
            o[n][1] = o[n][1] * a0[0] + p[n * 4 + 1] * a1[0];
            o[n][2] = o[n][2] * a0[1] + p[n * 4 + 2] * a1[1];
            o[n][3] = o[n][3] * a0[1] + p[n * 4 + 3] * a1[1];
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int t = t0 + qw * 16 + g + r * 8;
        if (t >= T_) continue;
        float inv = 1.0f / lrow[r];
        T *orow = out + (size_t)t * C + hoff + 2 * tq;
#pragma unroll
        for (int n = 0; n < 8; n++)
            *reinterpret_cast<uint32_t *>(orow + n * 8) = pack2<T>(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
}

/* Whether attn_mma_kernel<4>'s shared memory fits this device's blocks. */
static int g_mma4_ok[CUDA_MAX_DEVICES];

/* Key groups of the tensor-core kernel; GPTC_ATT_GROUPS=1|2|4 for comparisons. */
static int mma_groups(void) {
    static int g = 0;
    if (!g) {
        const char *e = getenv("GPTC_ATT_GROUPS");
        int v = e ? atoi(e) : 0;
        g = v == 1 || v == 4 ? v : 2;
    }
    return g == 4 && !g_mma4_ok[cuda_device_slot()] ? 2 : g;
}

/* attn_mma_kernel with mma_groups()'s groups, over grid (heads, query
 * tiles, segments); segs: NULL for one segment of T queries. */
template <typename T>
static cudaError_t mma_launch_t(dim3 grid, cudaStream_t st, void *out, const float *qkv, const void *k_cache,
                                const void *v_cache, cuda_kv_map map, int Tq, int C, float scale,
                                const int2 *segs) {
    int G = mma_groups();
    void (*k)(T *, const float *, const T *, const T *, cuda_kv_map, int, int, float, const int2 *) =
        G == 1 ? attn_mma_kernel<T, 1> : G == 4 ? attn_mma_kernel<T, 4> : attn_mma_kernel<T, 2>;
    return launch_pdl(k, grid, dim3(128 * G), mma_smem(G), st, (T *)out, qkv, (const T *)k_cache,
                      (const T *)v_cache, map, Tq, C, scale, segs);
}

static cudaError_t mma_launch(gptc_dtype dt, dim3 grid, cudaStream_t st, void *out, const float *qkv,
                              const void *k_cache, const void *v_cache, cuda_kv_map map, int Tq, int C,
                              float scale, const int2 *segs) {
    if (dt == GPTC_DTYPE_BF16)
        return mma_launch_t<__nv_bfloat16>(grid, st, out, qkv, k_cache, v_cache, map, Tq, C, scale, segs);
    return mma_launch_t<__half>(grid, st, out, qkv, k_cache, v_cache, map, Tq, C, scale, segs);
}

/* The most blocks a cluster of attn_split_kernel may have: 0 where clusters
 * are not to be used (before sm_90; GPTC_ATT_CLUSTER=0, for comparisons). */
static int split_cluster_ok(void) {
    static int off = -1;
    if (off < 0) off = getenv("GPTC_ATT_CLUSTER") && atoi(getenv("GPTC_ATT_CLUSTER")) == 0;
    int slot = cuda_device_slot();
    if (off || cuda_device_major() < 9) return 0;
    /* Clusters of 16 (a block per chunk of a 1024-position context) are
     * past the portable 8 and must be allowed per kernel and device. */
    static int allowed_of[CUDA_MAX_DEVICES];
    int &allowed = allowed_of[slot];
    if (!allowed) {
        allowed = cudaFuncSetAttribute(attn_split_kernel<float, true, true>,
                                       cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
                          cudaFuncSetAttribute(attn_split_kernel<__half, true, true>,
                                               cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
                          cudaFuncSetAttribute(attn_split_kernel<__nv_bfloat16, true, true>,
                                               cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
                          cudaFuncSetAttribute(attn_split_kernel<float, false, true>,
                                       cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
                          cudaFuncSetAttribute(attn_split_kernel<__half, false, true>,
                                               cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
                          cudaFuncSetAttribute(attn_split_kernel<__nv_bfloat16, false, true>,
                                               cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess
                      ? 16
                      : 8;
        (void)cudaGetLastError();
        /* Where a GPC cannot hold that many blocks at once (a MIG slice, a
         * card of small GPCs) the launch would fail: ask, halving. An
         * error of the query itself leaves the size as it is. */
        for (; allowed >= 2; allowed /= 2) {
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = dim3(1, 1, (unsigned)allowed);
            cfg.blockDim = dim3(SPLIT_THREADS);
            cfg.dynamicSmemBytes = SPLIT_CLUSTER_SMEM;
            cudaLaunchAttribute at;
            at.id = cudaLaunchAttributeClusterDimension;
            at.val.clusterDim.x = 1;
            at.val.clusterDim.y = 1;
            at.val.clusterDim.z = (unsigned)allowed;
            cfg.attrs = &at;
            cfg.numAttrs = 1;
            int n = 0;
            if (cudaOccupancyMaxActiveClusters(&n, attn_split_kernel<__half, false, true>, &cfg) != cudaSuccess) {
                (void)cudaGetLastError();
                break;
            }
            if (n > 0) break;
        }
        if (allowed < 2) allowed = -1; /* none: the tickets */
        if (getenv("GPTC_ATT_CLUSTER_SHOW")) /* for checking the query on a card */
            fprintf(stderr, "gptc cuda: split attention clusters of at most %d blocks\n", allowed > 0 ? allowed : 0);
    }
    return allowed > 0 ? allowed : 0;
}

/* A batch's pass whose split grid would not fit on the SMs at once with the
 * K / V prefetch registers (124 of them: 4 blocks an SM) runs the kernel
 * without them (the same sums); a smaller grid (batch 1, a few beams) keeps
 * them, its blocks' latency uncovered by others. H100, device ms a step at
 * 128 + 64 tokens, prefetch -> none (PRE 0, 48-56 registers): batch 32
 * gpt2 0.692 -> 0.623, gpt2-xl 4.94 -> 4.35; batch 128 gpt2 1.36 -> 1.21,
 * gpt2-xl 12.15 -> 10.10 (K rows alone or V rows alone: between). Where its
 * chunk's rows fit 48 KB of shared memory such a pass copies them there
 * (PRE 4: cp.async, every row in flight at once, 32-40 registers): none ->
 * shared, gpt2 batch 32 0.619 -> 0.586, 128 1.207 -> 1.104; gpt2-xl 8 3.02
 * -> 2.96, 32 4.34 -> 4.30, 128 10.10 -> 9.71 (but slower than the
 * prefetch where that fits: gpt2 batch 8 0.426 against 0.412, gpt2-xl
 * batch 1 2.16 against 2.01). A pass of few (head, query) pairs (`pairs`
 * in [SPLIT_TWO_MIN, SPLIT_TWO_MAX]) takes the shared-memory kernel with
 * two buffers (PRE 8): H200, 128 + 64 tokens, device ms a step: gpt2 batch 4 0.367 ->
 * 0.331, 8 0.385 -> 0.354, 16 0.417 -> 0.394; gpt2-xl batch 4 2.21 ->
 * 2.08, 8 2.54 -> 2.52 - though at these sizes most blocks take one chunk
 * and never use the second buffer. What it gives them is fewer blocks an
 * SM: PRE 4 with its shared memory padded by 18 KB ran as PRE 8 (H100,
 * gpt2 batch 8: 0.405 -> 0.373 ms, PRE 8 0.377; 8 KB: 0.385), so the
 * pass's working blocks (the grid spans max_len; past a query's chunks
 * they exit) spread over more SMs. From gpt2 batch 32 and gpt2-xl 16 on,
 * where every block works, it was slower (by 1.5-9%); and at gpt2-xl's
 * batch 1 (25 pairs), where the prefetch's registers win as before, 2.01
 * -> 2.19 (gpt2's batch 1 and 2, 12 and 24 pairs, would gain 1-3%; xl's
 * batch 2, 50 pairs, gains 2.41 -> 2.28). GPTC_ATT_TWO_MIN / _MAX=N:
 * other bounds, for comparisons.
 * GPTC_ATT_PRE=0, 3, 4 or 8 (GPTC_ATT_LEAN=0: 3): always that one, for
 * comparisons (4 and 8 where they fit, else 0). */
#define SPLIT_TWO_MIN 32
#define SPLIT_TWO_MAX 256
template <typename W, bool CLUSTER>
static void (*paged_split(long blocks, long pairs, int D, size_t *smem))(W *, const float *, const W *, const W *,
                                                                         cuda_kv_map, int, int, float, float *,
                                                                         int *, int) {
    static int pre = -1;
    static long fit = -1, two_min, two_max;
    if (pre < 0) {
        const char *a = getenv("GPTC_ATT_TWO_MIN"), *b = getenv("GPTC_ATT_TWO_MAX");
        two_min = a ? atol(a) : SPLIT_TWO_MIN, two_max = b ? atol(b) : SPLIT_TWO_MAX;
        const char *v = getenv("GPTC_ATT_PRE"), *l = getenv("GPTC_ATT_LEAN");
        int n = v ? atoi(v) : 0;
        pre = v ? (n == 3 || n == 4 || n == 8 ? n : 0) : l && atoi(l) == 0 ? 3 : 5; /* 5: by the grid */
    }
    size_t rows_smem = (*smem + 15) / 16 * 16 + split_smem_bytes<W>(D);
    size_t two_smem = rows_smem + split_smem_bytes<W>(D);
    bool two = pre == 8 || (pre == 5 && pairs >= two_min && pairs <= two_max);
    if (two && two_smem + SPLIT_STATIC_SMEM <= 48 * 1024) {
        *smem = two_smem;
        return attn_split_kernel<W, true, CLUSTER, 8>;
    }
    if (pre == 4 && rows_smem <= 48 * 1024) {
        *smem = rows_smem;
        return attn_split_kernel<W, true, CLUSTER, 4>;
    }
    if (fit < 0) {
        int dev = 0, sms = 0, per = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, attn_split_kernel<W, true, CLUSTER, 3>,
                                                          SPLIT_THREADS, 0) != cudaSuccess) {
            (void)cudaGetLastError();
            sms = per = 0;
        }
        fit = (long)sms * per;
    }
    if (pre == 3 || (pre == 5 && blocks <= fit)) return attn_split_kernel<W, true, CLUSTER, 3>;
    if (pre == 5 && rows_smem <= 48 * 1024) {
        *smem = rows_smem;
        return attn_split_kernel<W, true, CLUSTER, 4>;
    }
    return attn_split_kernel<W, true, CLUSTER, 0>;
}

/* The grouped kernel a paged pass launches: split_groups sets its shared
 * memory limit and asks its occupancy, so both name it here, once. */
template <typename W> static auto split_grp_kernel() {
    return attn_split_kernel<W, true, false, 4, true>;
}

/* How many groups of a block (and blocks a (head, query), *Zb) a paged
 * pass's split attention takes - its chunks side by side in one block,
 * merged in the block's shared memory where they are at most the groups -
 * or 0 for a block a chunk with tickets. Where a pair has at least 4 ticket
 * blocks (Z), the fewest groups from 4 to SPLIT_GROUPS_MAX that fit the
 * block's shared memory, run the pass's (head, query) pairs in one wave,
 * and leave no group more chunks of the longest context than a ticket block
 * has (Z a pair). A pass of few pairs spreads a pair over several blocks,
 * each its share of the chunks (a long context read by one SM a pair lost
 * to the tickets). H200, 128 + 64 tokens, wall ms a step, tickets ->
 * groups: gpt2 batch 1 0.272 -> 0.250 (4 groups x 4 blocks), batch 8 0.305
 * -> 0.302 (8); gpt2-xl batch 1 1.660 -> 1.628, batch 2 2.052 -> 1.976 (8 x
 * 2); bench/NOTES-cuda.md, sessions 20 and 21. Sets the kernel's shared
 * memory limit at its first launch on a device (an attribute set earlier
 * would load its code early: NOTES, session 15). GPTC_ATT_SPLIT_GROUPS=N:
 * at most N groups (0 or 1: the tickets).
 */
template <typename W> static int split_groups(int Z, int S, int D, long pairs, size_t *smem, int *Zb) {
    static int most = -1;
    static int limit[CUDA_MAX_DEVICES], sms[CUDA_MAX_DEVICES]; /* the attribute set, per device; -1: refused */
    static int per_c[CUDA_MAX_DEVICES][SPLIT_GROUPS_MAX + 1]; /* blocks an SM, asked once a (groups, bytes) */
    static size_t bytes_c[CUDA_MAX_DEVICES][SPLIT_GROUPS_MAX + 1];
    if (most < 0) {
        const char *v = getenv("GPTC_ATT_SPLIT_GROUPS");
        most = v ? atoi(v) : SPLIT_GROUPS_MAX;
        if (most > SPLIT_GROUPS_MAX) most = SPLIT_GROUPS_MAX;
    }
    int top = Z < most ? Z : most;
    /* Fewer than 4 blocks a pair (gpt2 batch 32: 3) lost where a context
     * reached 4 chunks: 128 + 128 tokens 0.476 -> 0.504 ms a step (0.467 ->
     * 0.451 at 128 + 64); session 21. */
    if (top < 2 || Z < 4 || pairs < 1) return 0;
    int dev = cuda_device_slot();
    if (limit[dev] == 0) {
        int d = 0, optin = 0;
        cudaFuncAttributes fa;
        /* the dynamic part's most: the block's less the kernel's static bytes */
        if (cudaGetDevice(&d) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d) != cudaSuccess ||
            cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, d) != cudaSuccess ||
            cudaFuncGetAttributes(&fa, split_grp_kernel<W>()) != cudaSuccess ||
            (optin -= (int)fa.sharedSizeBytes) <= 0 ||
            cudaFuncSetAttribute(split_grp_kernel<W>(),
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, optin) != cudaSuccess) {
            (void)cudaGetLastError();
            optin = -1;
        }
        limit[dev] = optin;
    }
    if (limit[dev] < 0) return 0;
    size_t part = split_part_floats(S, D) * sizeof(float);
    size_t group = split_group_floats(D) * sizeof(float) + split_smem_bytes<W>(D);
    long spare = sms[dev] / pairs, per_block = (S + Z - 1) / Z; /* a ticket block's most chunks */
    for (int G = top < 4 ? top : 4; G <= top; G++) {
        size_t bytes = part + (size_t)G * group;
        if (bytes > (size_t)limit[dev]) break;
        if (bytes_c[dev][G] != bytes) {
            int per = 0;
            if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, split_grp_kernel<W>(),
                                                              SPLIT_THREADS * G, bytes) != cudaSuccess) {
                (void)cudaGetLastError();
                return 0;
            }
            per_c[dev][G] = per, bytes_c[dev][G] = bytes;
        }
        long zb = (Z + G - 1) / G;
        if (zb > spare) zb = spare > 1 ? spare : 1;
        if ((long)per_c[dev][G] * sms[dev] < pairs || (S + G * zb - 1) / (G * zb) > per_block) continue;
        *smem = bytes;
        *Zb = (int)zb;
        return G;
    }
    return 0;
}

/* The warps a block of attn_warp_kernel for a paged pass of `pairs` (head,
 * query) pairs over contexts of at most S chunks; 0: the split kernel. The
 * graph of a pass is captured with S for n_ctx, so one choice serves every
 * context; a warp takes chunks w, w + W, ... H200, step ms, gpt2, 128 + 64
 * tokens / 900 + 100, split -> W 4 / 6 / 8 (session 22):
 *   batch 4 (48 pairs):  0.292 -> 0.294 / 0.294 / 0.295;  0.377 -> 0.478 / 0.425 / 0.373
 *   batch 8 (96):        0.301 -> 0.290 / 0.289 / 0.314;  0.454 -> 0.494 / 0.445 / 0.393
 *   batch 16 (192):      0.368 -> 0.370 / 0.364 / 0.400;  0.635 -> 0.604 / 0.529 / 0.566
 *   batch 32 (384):      0.466 -> 0.430 / -     / 0.557;  0.845 -> 0.677 / -     / 0.820
 *   batch 128:           0.990 -> 0.969 (W 2: 1.016, 8: 1.48)
 * and gpt2 batch 1 (12 pairs) 0.249 -> 0.256 (W 4), 0.253 (W 8). A block
 * of 8 warps (139 KB of shared memory) lands on an SM only once the QKV
 * product's blocks have left it, so the copies issued before the PDL wait
 * lose their head start (short contexts); 6 (105 KB) holds two blocks an
 * SM, 4 (72 KB) three. So: fewer pairs than half the SMs, the split
 * kernel; up to two blocks an SM, 6 warps; more, 4 - 4 also where a
 * block may not have 6 warps' shared memory (sm_86: 99 KB), the split
 * kernel where it may not have 4's. GPTC_ATT_WARP=0: never;
 * GPTC_ATT_WARP_W=N (1-8): N warps wherever it applies; GPTC_ATT_WARP_MIN=N:
 * from N pairs on (for comparisons). */
static int warp_use(int S, long pairs) {
    static int on = -1, force, least;
    static int limit[CUDA_MAX_DEVICES], sms[CUDA_MAX_DEVICES]; /* limit -1: refused, never */
    if (on < 0) {
        const char *a = getenv("GPTC_ATT_WARP"), *b = getenv("GPTC_ATT_WARP_W"), *c = getenv("GPTC_ATT_WARP_MIN");
        on = !(a && atoi(a) == 0);
        force = b && atoi(b) >= 1 && atoi(b) <= WARP_MAX_W ? atoi(b) : 0;
        least = c ? atoi(c) : -1;
    }
    if (!on || S > WARP_MAX_S) return 0;
    int dev = cuda_device_slot();
    if (limit[dev] == 0) {
        /* as much as the device lets a block have, up to 8 warps' */
        int n = (int)warp_smem(WARP_MAX_S, WARP_MAX_W), d = 0, optin = 0;
        bool ok = cudaGetDevice(&d) == cudaSuccess &&
                  cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, d) == cudaSuccess &&
                  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, d) == cudaSuccess;
        if (ok && optin < n) n = optin;
        ok = ok &&
             cudaFuncSetAttribute(attn_warp_kernel<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, n) ==
                 cudaSuccess &&
             cudaFuncSetAttribute(attn_warp_kernel<__nv_bfloat16>, cudaFuncAttributeMaxDynamicSharedMemorySize, n) ==
                 cudaSuccess;
        (void)cudaGetLastError();
        limit[dev] = ok ? n : -1;
    }
    if (limit[dev] < 0 || pairs < (least >= 0 ? least : sms[dev] / 2)) return 0;
    int W = force ? force : pairs <= 2L * sms[dev] ? 6 : 4;
    if (W > S) W = S;
    if (W > 4 && warp_smem(S, W) > (size_t)limit[dev]) W = 4;
    return warp_smem(S, W) <= (size_t)limit[dev] ? W : 0;
}

int cuda_attention_kind(gptc_dtype dt, int T, int C, int NH) {
    int D = C / NH;
    if (T < ATT_SPLIT_MAXT && D % 8 == 0 && D <= 256) return CUDA_ATT_SPLIT;
    static int no_mma = -1; /* GPTC_CUDA_NO_MMA=1: the CUDA-core kernel, for comparisons */
    if (no_mma < 0) no_mma = getenv("GPTC_CUDA_NO_MMA") != NULL;
    if (dt != GPTC_DTYPE_F32 && D == MMA_D && C % 8 == 0 && !no_mma) return CUDA_ATT_MMA;
    return D <= 128 ? CUDA_ATT_TILE : CUDA_ATT_FULL;
}

cudaError_t cuda_attention_run(int kind, gptc_dtype dt, void *out, const float *qkv,
                               const void *k_cache, const void *v_cache, cuda_kv_map map, int T,
                               int C, int NH, int max_len, float scale, float *scratch,
                               int *tickets, cudaStream_t st) {
    int D = C / NH;
    cudaError_t err = cudaSuccess;
    if (T < 1) return cudaSuccess;
    if (map.fresh && kind != CUDA_ATT_MMA) return cudaErrorInvalidValue;
    int S = (max_len + ATT_CHUNK - 1) / ATT_CHUNK; /* the split kernels' chunks */
    int warps = kind == CUDA_ATT_SPLIT && map.tables && dt != GPTC_DTYPE_F32 && D == WARP_D
                    ? warp_use(S, (long)NH * T)
                    : 0;
    if (warps) {
        dim3 grid((unsigned)NH, (unsigned)T);
        if (dt == GPTC_DTYPE_BF16)
            err = launch_pdl(attn_warp_kernel<__nv_bfloat16>, grid, dim3(32 * warps), warp_smem(S, warps), st,
                             (__nv_bfloat16 *)out, qkv, (const __nv_bfloat16 *)k_cache,
                             (const __nv_bfloat16 *)v_cache, map, C, scale, S);
        else
            err = launch_pdl(attn_warp_kernel<__half>, grid, dim3(32 * warps), warp_smem(S, warps), st, (__half *)out,
                             qkv, (const __half *)k_cache, (const __half *)v_cache, map, C, scale, S);
    } else if (kind == CUDA_ATT_SPLIT) {
        /* The grid spans max_len for the graphs' sake, but a block past its
         * query's chunks costs a launch: at batch 32 of gpt2-xl (1024
         * positions, 25 heads) 12,800 blocks did the work of 2,400. So
         * each block takes every Z-th chunk, Z as small as still gives
         * about ATT_SPLIT_BLOCKS blocks. */
        static int blocks = 0; /* GPTC_ATT_SPLIT_BLOCKS=N: another target, for comparisons */
        if (!blocks) {
            const char *v = getenv("GPTC_ATT_SPLIT_BLOCKS");
            blocks = v && atoi(v) > 0 ? atoi(v) : ATT_SPLIT_BLOCKS;
        }
        int Z = (blocks + NH * T - 1) / (NH * T);
        /* Where a block a (head, query) already gives 3/4 of the target,
         * one it is: no tickets, the chunks merged in the block's own
         * shared memory. H100, 128 + 64 tokens, device ms a step: gpt2-xl
         * batch 32 (800 pairs; Z 2 -> 1) 4.13 / 4.17 -> 3.95 / 4.00 (H200:
         * 4.03 -> 3.89), gpt2 batch 64 (768; 2 -> 1) 0.731 -> 0.724; at
         * gpt2 batch 32 (384 pairs) Z 2 was slower than 3 (0.549 -> 0.589). */
        if ((long)NH * T * 4 >= (long)blocks * 3) Z = 1;
        if (Z > S) Z = S;
        dim3 grid((unsigned)NH, (unsigned)T, (unsigned)Z);
        size_t csmem = (size_t)S * (D + 2) * sizeof(float);
        /* A session: a cluster of up to 16 blocks per (head, query) merges
         * through shared memory. A batch's pass: only where one block takes
         * all of a query's chunks (Z = 1, merged in its own shared memory, no
         * scratch or ticket); clusters of 2 or 3 lost to the tickets. H100,
         * decode step ms at 128 + 64 tokens, tickets -> cluster: gpt2 batch
         * 32 (Z = 3) 0.728 -> 0.737, batch 128 (Z = 1) 1.62 -> 1.52;
         * gpt2-xl batch 32 (Z = 2) 5.17 -> 5.49, batch 128 (Z = 1) 14.4 ->
         * 13.5. GPTC_ATT_CLUSTER=0: the tickets everywhere;
         * GPTC_ATT_CLUSTER_PAGED=0: in a batch's pass. */
        static int paged_cl = -1;
        if (paged_cl < 0) paged_cl = !(getenv("GPTC_ATT_CLUSTER_PAGED") && atoi(getenv("GPTC_ATT_CLUSTER_PAGED")) == 0);
        int most = (map.tables && (!paged_cl || Z > 1)) || csmem > SPLIT_CLUSTER_SMEM ? 0 : split_cluster_ok();
        long nb = (long)grid.x * grid.y * grid.z;
        if (most > 0) {
            grid.z = (unsigned)(Z < most ? Z : most);
            nb = (long)grid.x * grid.y * grid.z;
            cudaLaunchConfig_t cfg = {};
            cfg.gridDim = grid;
            cfg.blockDim = dim3(SPLIT_THREADS);
            cfg.dynamicSmemBytes = csmem;
            cfg.stream = st;
            cudaLaunchAttribute at[2];
            at[0].id = cudaLaunchAttributeClusterDimension;
            at[0].val.clusterDim.x = 1;
            at[0].val.clusterDim.y = 1;
            at[0].val.clusterDim.z = grid.z;
            at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            at[1].val.programmaticStreamSerializationAllowed = 1;
            cfg.attrs = at;
            cfg.numAttrs = cuda_pdl_enabled() ? 2 : 1;
            if (map.tables)
                GPTC_DISPATCH_DTYPE(dt, W,
                                    err = cudaLaunchKernelEx(&cfg,
                                                             paged_split<W, true>(nb, (long)grid.x * grid.y, D,
                                                                                  &cfg.dynamicSmemBytes),
                                                             (W *)out, qkv, (const W *)k_cache, (const W *)v_cache,
                                                             map, C, D, scale, scratch, tickets, S));
            else
                GPTC_DISPATCH_DTYPE(dt, W,
                                    err = cudaLaunchKernelEx(&cfg, attn_split_kernel<W, false, true>, (W *)out, qkv,
                                                             (const W *)k_cache, (const W *)v_cache, map, C, D,
                                                             scale, scratch, tickets, S));
        } else if (map.tables) {
            size_t smem = 0;
            GPTC_DISPATCH_DTYPE(dt, W, {
                /* groups of one block (Zb blocks a pair), else a block a chunk */
                int Zb = 1, G = split_groups<W>(Z, S, D, (long)grid.x * grid.y, &smem, &Zb);
                auto k = G > 1 ? split_grp_kernel<W>()
                               : paged_split<W, false>(nb, (long)grid.x * grid.y, D, &smem);
                if (G > 1) grid.z = (unsigned)Zb;
                err = launch_pdl(k, grid, dim3(SPLIT_THREADS * (G > 1 ? G : 1)), smem, st, (W *)out, qkv,
                                 (const W *)k_cache, (const W *)v_cache, map, C, D, scale, scratch, tickets, S);
            });
        }
        else
            GPTC_DISPATCH_DTYPE(dt, W,
                                err = launch_pdl(attn_split_kernel<W, false, false>, grid, dim3(SPLIT_THREADS),
                                                 0, st, (W *)out, qkv, (const W *)k_cache,
                                                 (const W *)v_cache, map, C, D, scale, scratch,
                                                 tickets, S));
    } else if (kind == CUDA_ATT_MMA) {
        dim3 grid((unsigned)NH, (unsigned)((T + MMA_Q - 1) / MMA_Q));
        err = mma_launch(dt, grid, st, out, qkv, k_cache, v_cache, map, T, C, scale, NULL);
    } else if (kind == CUDA_ATT_TILE) {
        dim3 grid((unsigned)NH, (unsigned)((T + TILE_Q - 1) / TILE_Q));
        if (D <= 64)
            GPTC_DISPATCH_DTYPE(dt, W,
                                err = launch_pdl(attn_tile_kernel<W, 2>, grid, dim3(TILE_THREADS),
                                                 tile_smem(D), st, (W *)out, qkv,
                                                 (const W *)k_cache, (const W *)v_cache, map, T, C,
                                                 D, scale));
        else
            GPTC_DISPATCH_DTYPE(dt, W,
                                err = launch_pdl(attn_tile_kernel<W, 4>, grid, dim3(TILE_THREADS),
                                                 tile_smem(D), st, (W *)out, qkv,
                                                 (const W *)k_cache, (const W *)v_cache, map, T, C,
                                                 D, scale));
    } else {
        size_t smem = cuda_attention_smem(D, max_len);
        dim3 grid((unsigned)NH, (unsigned)T);
        GPTC_DISPATCH_DTYPE(dt, W,
                            attention_kernel<W><<<grid, ATT_THREADS, smem, st>>>(
                                (W *)out, qkv, (const W *)k_cache, (const W *)v_cache, map, C, D,
                                scale));
    }
    return err != cudaSuccess ? err : cudaGetLastError();
}

cudaError_t cuda_attention_mma_segs(gptc_dtype dt, void *out, const float *qkv, const void *k_cache,
                                    const void *v_cache, cuda_kv_map map, const int32_t *segs, int n_segs,
                                    int max_T, int C, int NH, float scale, cudaStream_t st) {
    if (n_segs < 1) return cudaSuccess;
    if (n_segs > 65535 || max_T < 1) return cudaErrorInvalidValue;
    dim3 grid((unsigned)NH, (unsigned)((max_T + MMA_Q - 1) / MMA_Q), (unsigned)n_segs);
    return mma_launch(dt, grid, st, out, qkv, k_cache, v_cache, map, max_T, C, scale,
                      reinterpret_cast<const int2 *>(segs));
}

cudaError_t cuda_attention(gptc_dtype dt, void *out, const float *qkv, const void *k_cache,
                           const void *v_cache, const int32_t *pos, int T, int C, int NH,
                           int max_len, float scale, float *scratch, int *tickets,
                           cudaStream_t st) {
    cuda_kv_map map = {pos, NULL, NULL, 0, 0, NULL};
    return cuda_attention_run(cuda_attention_kind(dt, T, C, NH), dt, out, qkv, k_cache, v_cache,
                              map, T, C, NH, max_len, scale, scratch, tickets, st);
}

cudaError_t cuda_attention_prepare(int D, int max_len) {
    cudaError_t e;
    if (D == MMA_D &&
        ((e = cudaFuncSetAttribute(attn_mma_kernel<__half, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)mma_smem(1))) != cudaSuccess ||
         (e = cudaFuncSetAttribute(attn_mma_kernel<__half, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)mma_smem(2))) != cudaSuccess ||
         (e = cudaFuncSetAttribute(attn_mma_kernel<__nv_bfloat16, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)mma_smem(1))) != cudaSuccess ||
         (e = cudaFuncSetAttribute(attn_mma_kernel<__nv_bfloat16, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)mma_smem(2))) != cudaSuccess))
        return e;
    /* Four groups need more shared memory than some cards give a block:
     * there they are not used. */
    if (D == MMA_D &&
        (cudaFuncSetAttribute(attn_mma_kernel<__half, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              (int)mma_smem(4)) != cudaSuccess ||
         cudaFuncSetAttribute(attn_mma_kernel<__nv_bfloat16, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              (int)mma_smem(4)) != cudaSuccess)) {
        (void)cudaGetLastError();
        g_mma4_ok[cuda_device_slot()] = 0;
    } else if (D == MMA_D) {
        g_mma4_ok[cuda_device_slot()] = 1;
    }
    /* The limits only grow: a process may hold models of several shapes,
     * and lowering a limit would break the launches of an earlier one. A
     * kernel's limit is set per device (models on several GPUs). */
    static int tile_maxes[CUDA_MAX_DEVICES], full_maxes[CUDA_MAX_DEVICES];
    int dev = cuda_device_slot();
    int &tile_max = tile_maxes[dev], &full_max = full_maxes[dev];
    if (D <= 128 && tile_smem(D) > 48 * 1024 && (int)tile_smem(D) > tile_max) {
        int b = tile_max = (int)tile_smem(D);
        void (*fs[])(float *, const float *, const float *, const float *, cuda_kv_map, int, int,
                     int, float) = {attn_tile_kernel<float, 2>, attn_tile_kernel<float, 4>};
        void (*hs[])(__half *, const float *, const __half *, const __half *, cuda_kv_map, int,
                     int, int, float) = {attn_tile_kernel<__half, 2>, attn_tile_kernel<__half, 4>};
        void (*bs[])(__nv_bfloat16 *, const float *, const __nv_bfloat16 *, const __nv_bfloat16 *,
                     cuda_kv_map, int, int, int, float) = {attn_tile_kernel<__nv_bfloat16, 2>,
                                                            attn_tile_kernel<__nv_bfloat16, 4>};
        for (int k = 0; k < 2; k++) {
            if ((e = cudaFuncSetAttribute(fs[k], cudaFuncAttributeMaxDynamicSharedMemorySize, b)) !=
                    cudaSuccess ||
                (e = cudaFuncSetAttribute(hs[k], cudaFuncAttributeMaxDynamicSharedMemorySize, b)) !=
                    cudaSuccess ||
                (e = cudaFuncSetAttribute(bs[k], cudaFuncAttributeMaxDynamicSharedMemorySize, b)) !=
                    cudaSuccess)
                return e;
        }
    }
    size_t bytes = cuda_attention_smem(D, max_len);
    if (bytes <= 48 * 1024 || (int)bytes <= full_max) return cudaSuccess;
    full_max = (int)bytes;
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
