/*
 * decode.cu - the whole batch-1 decode step as one persistent kernel: an
 * experiment, used only with GPTC_CUDA_MEGA=1. It is correct (test_cuda runs
 * with it) but measured slower than the graph of per-op kernels (0.38 vs
 * 0.26 ms per gpt2 token on an H200); bench/NOTES-cuda.md has the profiles
 * and what to try next.
 *
 * At batch 1 a decode step is ~5 small products per layer whose data is a
 * few megabytes each; as separate kernels each costs a launch, a ramp-up and
 * a drain (~4 us on an H100/H200, measured: 62 kernels took 0.255 ms for
 * gpt2 against a 0.06-0.08 ms floor). Here one block per SM stays resident
 * for the whole step and the phases are separated by grid barriers (~1 us):
 *
 *   per layer  A  layer norm 1 + QKV product; K/V written into the cache
 *              B  attention over the cache, split in chunks of 32 keys
 *              C  merge of the chunks + attention projection, residual add
 *              D  layer norm 2 + FC + activation
 *              E  MLP projection, residual add
 *   then       final layer norm + LM head (logits) + argmax
 *
 * Every block stages the whole input vector of a phase in shared memory
 * (applying the layer norm, or merging the attention chunks, itself: cheaper
 * than another barrier), then its warps compute rows spread over the whole
 * grid. What a phase reads that no earlier phase writes - its first rows of
 * weights and their biases - it loads into registers before it waits at the
 * barrier, as programmatic dependent launch lets the kernel-per-op path do
 * (the layer norm's parameters load after it, in the same round trip as the
 * input).
 *
 * Data written inside the kernel (the residual, q, the cache row, chunk
 * partials, the MLP activation) is read back with __ldcg (L2, not the
 * non-coherent L1 path); weights, which never change, with __ldg.
 * Numerics follow the multi-kernel path: fp32 accumulation, activations
 * that feed a product rounded to the weight dtype.
 */
#include <cooperative_groups.h>

#include "act.cuh"
#include "common.cuh"
#include "kernels.cuh"
#include "pick.cuh"

#define DEC_THREADS 256
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_KEYS 32   /* keys per attention work item: one per lane */
#define DEC_MAX_D 128 /* head sizes the kernel handles (multiples of 8) */
#define DEC_MAX_C 2048 /* n_embd the layer norm stage handles */
#define DEC_MAX_CHUNKS 2048 /* heads x chunks of 32 keys */

size_t cuda_decode_part_floats(int NH, int D, int max_len) {
    return (size_t)NH * (size_t)((max_len + DEC_KEYS - 1) / DEC_KEYS) * (size_t)(D + 2);
}

int cuda_decode_supported(int C, int NH, int max_len) {
    int D = NH > 0 ? C / NH : 0;
    return NH > 0 && D * NH == C && D % 8 == 0 && D <= DEC_MAX_D && C <= DEC_MAX_C &&
           (size_t)NH * (size_t)((max_len + DEC_KEYS - 1) / DEC_KEYS) <= DEC_MAX_CHUNKS;
}

/* ---- grid barrier ---- */

/* cooperative_groups' grid sync: measured 0.97 us per barrier on an H200
 * with 132 blocks, where a barrier of per-block flags polled by every block
 * took 2.2 us. sync[0] is the argmax ticket. */
#define SYNC_TICKET 0

__device__ __forceinline__ void grid_barrier() { cooperative_groups::this_grid().sync(); }

/* GPTC_CUDA_PROF: block 0 stamps the global timer into trace[k++] at the
 * start and four times per phase (see phase_product). */
__device__ __forceinline__ void trace_mark(unsigned long long *trace, int &k) {
    if (trace && blockIdx.x == 0 && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        trace[k] = t;
    }
    k++;
}

/* ---- loads ---- */

/* 16 bytes written earlier in this kernel (by another block): through L2. */
__device__ __forceinline__ uint4 ld_cg16(const void *p) { return __ldcg(reinterpret_cast<const uint4 *>(p)); }

/* Two consecutive 16-bit elements from a raw 32-bit word. */
template <typename T> __device__ __forceinline__ float2 to_f2(uint32_t u);
template <> __device__ __forceinline__ float2 to_f2<__half>(uint32_t u) {
    return __half22float2(*reinterpret_cast<__half2 *>(&u));
}
template <> __device__ __forceinline__ float2 to_f2<__nv_bfloat16>(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&u));
}

/* 8 elements of T written in this kernel, as fp32 (fp32: two 16-byte loads). */
template <typename T> __device__ __forceinline__ void ld_cg8(const T *p, float v[8]) {
    cvt8<T>(ld_cg16(p), v);
}
template <> __device__ __forceinline__ void ld_cg8<float>(const float *p, float v[8]) {
    float4 a = __ldcg(reinterpret_cast<const float4 *>(p)), b = __ldcg(reinterpret_cast<const float4 *>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

/* ---- the phases ---- */

/* This warp's index in an order that puts consecutive rows on different SMs,
 * so phases with fewer rows than warps still use every SM. */
__device__ __forceinline__ int gwarp() { return (threadIdx.x >> 5) * gridDim.x + blockIdx.x; }
__device__ __forceinline__ int nwarps() { return DEC_WARPS * gridDim.x; }

/* What a product does with each row's sum v (on lane 0). */
enum { ROW_QKV, ROW_RESID, ROW_ACT, ROW_LOGITS };
struct RowEpi {
    int mode;
    const float *bias; /* all but ROW_LOGITS */
    float *out;        /* QKV: q (C); RESID: x; LOGITS: logits */
    void *hout;        /* ACT: (F) dtype */
    void *k, *v;       /* QKV: this position's cache rows */
    int C;
    gptc_act act;
};
struct ArgBest {
    float v;
    int i;
};

__device__ __forceinline__ float act_call(float v, gptc_act act) { return act_apply(v, act); }

template <typename T>
__device__ __forceinline__ void row_store(const RowEpi &e, int o, float v, ArgBest &b) {
    switch (e.mode) {
    case ROW_QKV:
        if (o < e.C) e.out[o] = v;
        else if (o < 2 * e.C) ((T *)e.k)[o - e.C] = from_f<T>(v);
        else ((T *)e.v)[o - 2 * e.C] = from_f<T>(v);
        break;
    case ROW_RESID: e.out[o] = __ldcg(e.out + o) + v; break;
    case ROW_ACT: ((T *)e.hout)[o] = from_f<T>(act_call(v, e.act)); break;
    default:
        e.out[o] = v;
        better(b.v, b.i, v, o);
    }
}

/* The loads of rows r[] (R rows, NCL 16-byte chunks per lane from chunk
 * base) and their dot products with xs, accumulated into acc. */
template <typename T, int NCL, int R>
__device__ __forceinline__ void load_rows(Vec8<T> (&wv)[R][NCL], const T *const (&r)[R], int base,
                                          int nch) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < NCL; k++) {
        int c = base + lane + 32 * k;
#pragma unroll
        for (int q = 0; q < R; q++)
            if (c < nch) wv[q][k].load(r[q] + (size_t)c * 8);
    }
}
template <typename T, int NCL, int R>
__device__ __forceinline__ void dot_rows(float (&acc)[R], const Vec8<T> (&wv)[R][NCL],
                                         const float4 *xs4, int base, int nch) {
    int lane = threadIdx.x & 31;
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

/* How a phase builds its input vector in shared memory. */
enum { STAGE_LN, STAGE_MERGE, STAGE_VEC };

/* One product phase: input staging, then rows of w (O, ldw) over the whole
 * grid with an epilogue. */
struct Phase {
    const void *w;
    int ldw, O;
    RowEpi e;
    int stage;
    int barrier; /* wait for the previous phase first */
    int I;       /* input length */
    /* STAGE_LN: layernorm(x) with (lw, lb, eps); with tok >= 0 x is the
     * embedding wte[tok] + wpe[pos] instead, which block 0 stores to xout. */
    const float *x, *lw, *lb;
    float eps;
    const void *wte;
    const float *wpe;
    int ldwte, tok, pos;
    float *xout;
    /* STAGE_MERGE: the attention chunks */
    const float *part;
    int D, NH, L;
    /* STAGE_VEC: a vector of dtype T */
    const void *vec;
    unsigned long long *trace;
    int tk; /* trace slots tk .. tk + 3 */
};

template <typename T> __device__ void stage_vec(float *xs, const T *v, int I, int ldw);
template <typename T>
__device__ void stage_merge(float *xs, float *ml, const float *part, int C, int Cp, int D, int NH,
                            int L);

/*
 * The phase. Before the barrier, each warp issues the loads of its first R
 * rows (the first NCL chunks of each lane) and their biases; after it, the
 * block stages the input
 * and the warp finishes those rows from registers, then any further rows.
 * The kernel runs the phases from one loop, so each (NCL, R) variant is
 * compiled once: the code stays small enough for the instruction cache
 * without calls (a call saves and restores most of 255 registers).
 */
template <typename T, int NCL, int R>
__device__ __forceinline__ ArgBest phase_product(const Phase &p, float *xs, float *red, float *ml) {
    constexpr int K = DEC_MAX_C / DEC_THREADS;
    const T *w = (const T *)p.w;
    int lane = threadIdx.x & 31, nch = p.ldw / 8, ws = nwarps(), O = p.O, o = gwarp();
    const RowEpi e = p.e;
    ArgBest best = {-INFINITY, INT_MAX};
    float acc[R], bias[R];
    const T *r[R];
    Vec8<T> wv[R][NCL];
#pragma unroll
    for (int q = 0; q < R; q++) {
        acc[q] = 0.0f;
        r[q] = w + (size_t)min(o + q * ws, O - 1) * p.ldw;
        bias[q] = e.bias && o + q * ws < O ? __ldg(e.bias + o + q * ws) : 0.0f;
    }
    if (o < O) load_rows<T, NCL, R>(wv, r, 0, nch);
    int tk = p.tk;
    trace_mark(p.trace, tk);
    if (p.barrier) grid_barrier();
    trace_mark(p.trace, tk);

    /* The input. */
    if (p.stage == STAGE_LN) {
        /* The parameters load with the input: no extra round trip. */
        float xv[K], lwv[K], lbv[K], sum = 0.0f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            int i = threadIdx.x + k * DEC_THREADS;
            xv[k] = 0.0f;
            lwv[k] = i < p.I ? __ldg(p.lw + i) : 0.0f;
            lbv[k] = i < p.I ? __ldg(p.lb + i) : 0.0f;
            if (i < p.I)
                xv[k] = p.tok >= 0 ? to_f(((const T *)p.wte)[(size_t)p.tok * p.ldwte + i]) +
                                         __ldg(p.wpe + (size_t)p.pos * p.I + i)
                                   : __ldcg(p.x + i);
        }
#pragma unroll
        for (int k = 0; k < K; k++) {
            int i = threadIdx.x + k * DEC_THREADS;
            if (i < p.I && p.tok >= 0 && blockIdx.x == 0) p.xout[i] = xv[k];
            sum += xv[k];
        }
        float mean = block_sum(sum, red) / (float)p.I, var = 0.0f;
#pragma unroll
        for (int k = 0; k < K; k++) {
            float d = xv[k] - mean;
            if (threadIdx.x + k * DEC_THREADS < p.I) var += d * d;
        }
        var = block_sum(var, red) / (float)p.I;
        float rstd = 1.0f / sqrtf(var + p.eps);
#pragma unroll
        for (int k = 0; k < K; k++) {
            int i = threadIdx.x + k * DEC_THREADS;
            if (i < p.I) xs[i] = to_f(from_f<T>((xv[k] - mean) * rstd * lwv[k] + lbv[k]));
        }
        for (int i = p.I + threadIdx.x; i < p.ldw; i += DEC_THREADS) xs[i] = 0.0f;
        __syncthreads();
    } else if (p.stage == STAGE_MERGE) {
        stage_merge<T>(xs, ml, p.part, p.I, p.ldw, p.D, p.NH, p.L);
    } else {
        stage_vec<T>(xs, (const T *)p.vec, p.I, p.ldw);
    }
    trace_mark(p.trace, tk);

    /* The rows. */
    const float4 *xs4 = reinterpret_cast<const float4 *>(xs);
    for (; o < O; o += ws * R) {
        for (int base = 0; base < nch; base += 32 * NCL) {
            if (base > 0 || o != gwarp()) load_rows<T, NCL, R>(wv, r, base, nch);
            dot_rows<T, NCL, R>(acc, wv, xs4, base, nch);
        }
#pragma unroll
        for (int q = 0; q < R; q++) {
            float v = warp_sum(acc[q]);
            if (lane == 0 && o + q * ws < O) row_store<T>(e, o + q * ws, v + bias[q], best);
            int on = o + ws * R + q * ws; /* the next group */
            acc[q] = 0.0f;
            r[q] = w + (size_t)min(on, O - 1) * p.ldw;
            bias[q] = e.bias && on < O ? __ldg(e.bias + on) : 0.0f;
        }
    }
    trace_mark(p.trace, tk);
    return best;
}

/* phase_product with the chunk batch chosen for the row length: 6 to 8
 * 16-byte loads in flight per lane (more, with the attention's 64
 * registers of loads, made the compiler spill to local memory). */
template <typename T> __device__ __forceinline__ ArgBest product(const Phase &p, float *xs, float *red, float *ml) {
    int per_lane = (p.ldw / 8 + 31) / 32;
    if (sizeof(T) == 4) {
        if (per_lane <= 3) return phase_product<T, 3, 2>(p, xs, red, ml);
        return phase_product<T, 6, 1>(p, xs, red, ml);
    }
    if (per_lane <= 3) return phase_product<T, 3, 2>(p, xs, red, ml);
    if (per_lane <= 7) return phase_product<T, 7, 1>(p, xs, red, ml);
    return phase_product<T, 8, 1>(p, xs, red, ml);
}

/* xs (ldw) = v (I) of dtype T written in this kernel, zero padded. */
template <typename T> __device__ void stage_vec(float *xs, const T *v, int I, int ldw) {
    if (I % 8 == 0) {
        for (int c = threadIdx.x; c < I / 8; c += DEC_THREADS) {
            float f[8];
            ld_cg8<T>(v + c * 8, f);
#pragma unroll
            for (int k = 0; k < 8; k++) xs[c * 8 + k] = f[k];
        }
        for (int i = I + threadIdx.x; i < ldw; i += DEC_THREADS) xs[i] = 0.0f;
    } else {
        for (int i = threadIdx.x; i < ldw; i += DEC_THREADS) xs[i] = i < I ? to_f(__ldcg(v + i)) : 0.0f;
    }
    __syncthreads();
}

/*
 * Attention of the query q (C fp32) over keys [0, L) of one layer's cache:
 * work item (h, s) is head h against keys [32 s, 32 s + 32), one key per
 * lane, and leaves (o (D) unnormalised, m, l) in part. NC = D / 8 when known
 * at compile time (0: any D): then each lane issues all its K and V loads
 * before it uses any, one L2/HBM round trip instead of one per key.
 */
template <typename T, int NC>
__device__ __forceinline__ void attention_items(const float *q, const T *kc, const T *vc, float *part, int C,
                                int D, int NH, int L, float scale, float *qsh) {
    int lane = threadIdx.x & 31;
    int S = (L + DEC_KEYS - 1) / DEC_KEYS, items = NH * S;
    float *qs = qsh + (threadIdx.x >> 5) * DEC_MAX_D;
    for (int it = gwarp(); it < items; it += nwarps()) {
        int h = it / S, s = it % S, t = s * DEC_KEYS + lane;
        int nk = min(DEC_KEYS, L - s * DEC_KEYS);
        __syncwarp();
        for (int d = lane; d < D; d += 32) qs[d] = __ldcg(q + h * D + d) * scale;
        __syncwarp();
        const T *vb = vc + (size_t)(s * DEC_KEYS) * C + h * D;
        const T *kr = kc + (size_t)min(t, L - 1) * C + h * D;
        float *po = part + (size_t)it * (D + 2);
        if constexpr (NC == 8) {
            /* D = 64: lane owns dims 2 lane, 2 lane + 1 of the output. */
            uint32_t vraw[DEC_KEYS];
#pragma unroll
            for (int j = 0; j < DEC_KEYS; j++)
                if (j < nk) vraw[j] = __ldcg(reinterpret_cast<const unsigned *>(vb + (size_t)j * C + 2 * lane));
            uint4 kraw[8];
#pragma unroll
            for (int c = 0; c < 8; c++) kraw[c] = ld_cg16(kr + c * 8);
            float a = 0.0f;
#pragma unroll
            for (int c = 0; c < 8; c++) {
                float kv[8];
                cvt8<T>(kraw[c], kv);
#pragma unroll
                for (int i = 0; i < 8; i++) a += qs[c * 8 + i] * kv[i];
            }
            float sc = t < L ? a : -INFINITY;
            float m = warp_max(sc);
            float p = t < L ? expf(sc - m) : 0.0f;
            float l = warp_sum(p);
            float o0 = 0.0f, o1 = 0.0f;
#pragma unroll
            for (int j = 0; j < DEC_KEYS; j++) {
                float pj = __shfl_sync(0xffffffffu, p, j);
                if (j < nk) {
                    float2 v = to_f2<T>(vraw[j]);
                    o0 += pj * v.x;
                    o1 += pj * v.y;
                }
            }
            po[2 * lane] = o0;
            po[2 * lane + 1] = o1;
            if (lane == 0) po[D] = m, po[D + 1] = l;
        } else {
        float sc = -INFINITY;
        if (t < L) {
            float a = 0.0f;
            for (int c = 0; c < D / 8; c++) {
                float kv[8];
                ld_cg8<T>(kr + c * 8, kv);
#pragma unroll
                for (int i = 0; i < 8; i++) a += qs[c * 8 + i] * kv[i];
            }
            sc = a;
        }
        float m = warp_max(sc);
        float p = t < L ? expf(sc - m) : 0.0f;
        float l = warp_sum(p);
        for (int d0 = 0; d0 < D; d0 += 64) {
            int d = d0 + 2 * lane;
            float o0 = 0.0f, o1 = 0.0f;
            for (int j = 0; j < nk; j++) {
                float pj = __shfl_sync(0xffffffffu, p, j);
                if (d < D) {
                    const T *vr = vb + (size_t)j * C + d;
                    o0 += pj * to_f(__ldcg(vr));
                    o1 += pj * to_f(__ldcg(vr + 1));
                }
            }
            if (d < D) po[d] = o0, po[d + 1] = o1;
        }
        if (lane == 0) po[D] = m, po[D + 1] = l;
        }
    }
}

/* xs (Cp) = the attention output merged from the chunks, rounded to T,
 * zero padded. First every chunk's (m, l) into shared memory and, per head,
 * each chunk's weight exp(m_k - M) / sum_k exp(m_k - M) l_k; then each
 * element's weighted sum, its chunks' loads issued 8 at a time. */
template <typename T>
__device__ void stage_merge(float *xs, float *ml, const float *part, int C, int Cp, int D, int NH,
                            int L) {
    int S = (L + DEC_KEYS - 1) / DEC_KEYS;
    for (int j = threadIdx.x; j < NH * S; j += DEC_THREADS) {
        const float *pk = part + (size_t)j * (D + 2);
        ml[2 * j] = __ldcg(pk + D);
        ml[2 * j + 1] = __ldcg(pk + D + 1);
    }
    __syncthreads();
    for (int h = threadIdx.x; h < NH; h += DEC_THREADS) {
        float M = -INFINITY, den = 0.0f;
        for (int k = 0; k < S; k++) M = fmaxf(M, ml[2 * (h * S + k)]);
        for (int k = 0; k < S; k++) {
            float w = expf(ml[2 * (h * S + k)] - M);
            ml[2 * (h * S + k)] = w;
            den += w * ml[2 * (h * S + k) + 1];
        }
        for (int k = 0; k < S; k++) ml[2 * (h * S + k)] /= den;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < Cp; i += DEC_THREADS) {
        float v = 0.0f;
        if (i < C) {
            int h = i / D, d = i % D;
            const float *pb = part + (size_t)h * S * (D + 2) + d;
            const float *wb = ml + 2 * h * S;
            for (int k0 = 0; k0 < S; k0 += 8) {
                float ok[8];
#pragma unroll
                for (int u = 0; u < 8; u++) ok[u] = k0 + u < S ? __ldcg(pb + (size_t)(k0 + u) * (D + 2)) : 0.0f;
#pragma unroll
                for (int u = 0; u < 8; u++)
                    if (k0 + u < S) v += wb[2 * (k0 + u)] * ok[u];
            }
            v = to_f(from_f<T>(v));
        }
        xs[i] = v;
    }
    __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(DEC_THREADS, 1) decode_kernel(cuda_decode_args a) {
    extern __shared__ float4 sm4[];
    float *xs = reinterpret_cast<float *>(sm4);    /* max(Cp, Fp) */
    float *qsh = xs + (a.Cp > a.Fp ? a.Cp : a.Fp); /* DEC_WARPS * DEC_MAX_D */
    float *mlsh = qsh + DEC_WARPS * DEC_MAX_D;     /* 2 * DEC_MAX_CHUNKS */
    __shared__ float red[32];
    __shared__ float bv[DEC_WARPS];
    __shared__ int bi[DEC_WARPS];
    __shared__ int last;
    int C = a.C, D = a.C / a.NH, Cp = a.Cp, Fp = a.Fp;
    int pos = *a.pos, tok = *a.tok, L = pos + 1;
    const cuda_decode_layer *ly = a.layers;
    int tk = 0;
    trace_mark(a.trace, tk);

    ArgBest head = {-INFINITY, INT_MAX};
    /* Phases 5 l + 0..4 of layer l (qkv, attention, proj, fc, mproj), then
     * the LM head; one loop so that each kind's code is compiled once. */
    int nph = 5 * a.n_layer + 1;
    for (int ph = 0; ph < nph; ph++, tk += 4) {
        int l = ph / 5, kind = ph == nph - 1 ? 5 : ph % 5;
        const cuda_decode_layer &y = ly[kind == 5 ? 0 : l];
        T *kc = (T *)y.k_cache, *vc = (T *)y.v_cache;
        /* Built afresh each phase from the kernel's parameters, so that
         * none of it stays live in registers across the loop. */
        Phase p;
        p.trace = a.trace;
        p.eps = a.eps;
        p.D = D, p.NH = a.NH, p.L = L;
        p.part = a.part, p.vec = a.h;
        p.wte = a.wte, p.ldwte = Cp, p.wpe = a.wpe, p.pos = pos, p.xout = a.x, p.x = a.x;
        p.lw = p.lb = nullptr;
        p.tk = tk;
        p.barrier = ph > 0;
        p.tok = -1;
        switch (kind) {
        case 0: /* layer norm 1 (of the embedding in layer 0) + QKV */
            p.w = y.attn_w, p.ldw = Cp, p.O = 3 * C, p.I = C;
            p.e = {ROW_QKV, y.attn_b, a.qkv, nullptr, kc + (size_t)pos * C, vc + (size_t)pos * C, C,
                   a.act};
            p.stage = STAGE_LN, p.lw = y.ln1_w, p.lb = y.ln1_b;
            p.tok = l == 0 ? tok : -1;
            break;
        case 2: /* merge of the attention chunks + projection, residual add */
            p.w = y.proj_w, p.ldw = Cp, p.O = C, p.I = C;
            p.e = {ROW_RESID, y.proj_b, a.x, nullptr, nullptr, nullptr, C, a.act};
            p.stage = STAGE_MERGE;
            break;
        case 3: /* layer norm 2 + FC + activation */
            p.w = y.fc_w, p.ldw = Cp, p.O = a.F, p.I = C;
            p.e = {ROW_ACT, y.fc_b, nullptr, a.h, nullptr, nullptr, C, a.act};
            p.stage = STAGE_LN, p.lw = y.ln2_w, p.lb = y.ln2_b;
            break;
        case 4: /* MLP projection, residual add */
            p.w = y.mproj_w, p.ldw = Fp, p.O = C, p.I = a.F;
            p.e = {ROW_RESID, y.mproj_b, a.x, nullptr, nullptr, nullptr, C, a.act};
            p.stage = STAGE_VEC;
            break;
        case 5: /* final layer norm + LM head */
            p.w = a.lm_head, p.ldw = Cp, p.O = a.V, p.I = C;
            p.e = {ROW_LOGITS, nullptr, a.logits, nullptr, nullptr, nullptr, C, a.act};
            p.stage = STAGE_LN, p.lw = a.lnf_w, p.lb = a.lnf_b;
            break;
        }
        if (kind != 1) {
            head = product<T>(p, xs, red, mlsh);
            continue;
        }
        /* The attention chunks: nothing to load before the barrier (the
         * query and this position's K/V come from the phase before). */
        int k = tk;
        trace_mark(a.trace, k);
        grid_barrier();
        trace_mark(a.trace, k);
        trace_mark(a.trace, k);
        if constexpr (sizeof(T) == 2) {
            if (D == 64) attention_items<T, 8>(a.qkv, kc, vc, a.part, C, D, a.NH, L, y.scale, qsh);
            else attention_items<T, 0>(a.qkv, kc, vc, a.part, C, D, a.NH, L, y.scale, qsh);
        } else {
            attention_items<T, 0>(a.qkv, kc, vc, a.part, C, D, a.NH, L, y.scale, qsh);
        }
        trace_mark(a.trace, k);
    }
    float best = head.v;
    int besti = head.i;
    if (!a.argmax) return;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) bv[warp] = best, bi[warp] = besti;
    __syncthreads();
    if (threadIdx.x == 0) {
        float v = -INFINITY;
        int i = INT_MAX;
        for (int k = 0; k < DEC_WARPS; k++) better(v, i, bv[k], bi[k]);
        a.am_v[blockIdx.x] = v;
        a.am_i[blockIdx.x] = i;
        __threadfence();
        last = atomicAdd(a.sync + SYNC_TICKET, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    /* The last block to finish picks the token and advances the position. */
    __threadfence();
    float v = -INFINITY;
    int i = INT_MAX;
    for (int k = threadIdx.x; k < (int)gridDim.x; k += DEC_THREADS) better(v, i, __ldcg(a.am_v + k), __ldcg(a.am_i + k));
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    if (lane == 0) bv[warp] = v, bi[warp] = i;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 0; k < DEC_WARPS; k++) better(v, i, bv[k], bi[k]);
        *a.tok = i == INT_MAX ? 0 : i; /* all NaN: token 0 rather than garbage */
        *a.pos = pos + 1;
        a.sync[SYNC_TICKET] = 0;
    }
}

static size_t decode_smem(const cuda_decode_args *a) {
    int w = a->Cp > a->Fp ? a->Cp : a->Fp;
    return ((size_t)w + DEC_WARPS * DEC_MAX_D + 2 * DEC_MAX_CHUNKS) * sizeof(float);
}

int cuda_decode_blocks(void) {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

template <typename T> static cudaError_t decode_launch(const cuda_decode_args *a, cudaStream_t st) {
    size_t smem = decode_smem(a);
    cudaError_t e = cudaFuncSetAttribute(decode_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    int per_sm = 0;
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, decode_kernel<T>, DEC_THREADS, smem);
    if (e != cudaSuccess) return e;
    if (per_sm < 1) return cudaErrorCooperativeLaunchTooLarge;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)a->blocks);
    cfg.blockDim = dim3(DEC_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    /* Cooperative: the runtime guarantees every block is resident at once,
     * which the grid barriers need. */
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative;
    at[0].val.cooperative = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, decode_kernel<T>, *a);
}

cudaError_t cuda_decode_step(gptc_dtype dt, const cuda_decode_args *a, cudaStream_t st) {
    cudaError_t err;
    GPTC_DISPATCH_DTYPE(dt, W, err = decode_launch<W>(a, st));
    return err != cudaSuccess ? err : cudaGetLastError();
}
