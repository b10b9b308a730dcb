/*
 * sample.cu - the logits processors and the sampler of sampling.c on the
 * device, so that a decode step can end in the next token with no copy of the
 * logits to the host.
 *
 * One block of SAMPLE_THREADS threads does a whole step. With one SM, the
 * cost is instructions per vocabulary entry, so the vocabulary is walked as
 * few times as possible and everything else works on short lists. The scores
 * live in shared memory when they fit (V = 50257 does on Hopper) and in the
 * logits buffer otherwise. The stages, in generate()'s order:
 *
 *  1. The repetition penalty, over the tokens the `present` mask marks, then
 *     the bans (no-repeat-ngram, min-new-tokens), all written into the
 *     logits: greedy decoding then needs a single reading pass (the argmax).
 *  2. One pass applies the temperature and reduces the max, the min and the
 *     count of the finite scores. In shared-memory mode it also sets the
 *     logits to -inf, so that when top-k leaves a short list only the list
 *     needs writing back.
 *  3. Top-k (k <= SAMPLE_THREADS, shared memory): the k-th largest of the
 *     threads' maxima is no larger than the k-th largest score, so one pass
 *     copies every score at or above it (usually a few more than k) into a
 *     list, each warp appending its own contiguous chunk of the vocabulary in
 *     order. The temperature waits for that list: division is the costliest
 *     step of the pass over the vocabulary, and it is monotone, so the bound
 *     only needs widening to the scores whose quotient ties with its own.
 *     Top-k itself then runs on the list. Otherwise (or when the list
 *     overflows) a radix select of the k-th largest score runs over the
 *     vocabulary, on the distance of each score's order-preserving key from
 *     the max's key: digits of that distance spread a vocabulary over many
 *     histogram bins, where the top digits of the keys themselves would pile
 *     it into a few (logits share an exponent) and serialize the atomics.
 *  4. Top-p: a radix descent over a 64-bit key that orders scores ascending
 *     and ties by descending index (warp_top_p's order), with per-digit
 *     histograms of the count and of the probability mass in fixed point, to
 *     the first token whose ascending cumulative mass exceeds 1 - top_p.
 *  5. The categorical draw: per-thread sums over contiguous chunks, a block
 *     scan in double, and a walk of the one chunk where the sum crosses u.
 *
 * A list of at most 64 is finished by warp 0 alone (warp_tail), with no
 * block barrier: pairwise counts replace the radix passes there. When the
 * survivors are many (no top-k, a large k), top-p and the draw run
 * over the whole vocabulary instead, and an ordered compaction pass builds
 * the list once they are few. Integer atomics and reductions in a fixed order
 * make a step reproducible run to run.
 */
#include <limits.h>
#include <math.h>

#include <atomic>

#include "common.cuh"
#include "kernels.cuh"
#include "pick.cuh"

#define SAMPLE_THREADS 1024
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define LIST_CAP 2048                           /* survivors that the shared list holds */
#define WARP_SLOTS (LIST_CAP / SAMPLE_WARPS)    /* of which each warp appends at most this many */
#define TOPK_BITS 10                            /* radix digit of the top-k select: a bin a thread */
#define TOPP_BITS 8                             /* radix digit of the top-p descent: 256 bins */
#define UNROLL 4                                /* float4 loads a lane keeps in flight */
#define FBATCH 8                                /* elements a thread holds in the compaction pass */
#define FULL_MASK 0xffffffffu

static_assert(SAMPLE_THREADS == 1024, "the block reductions assume 32 full warps");
static_assert((1 << TOPK_BITS) == SAMPLE_THREADS, "a top-k bucket search takes a bin a thread");
static_assert((1 << TOPP_BITS) <= 32 * 8, "a top-p bucket search takes eight bins a lane");

namespace {

/* Values that one thread finds and every thread then reads. */
struct sample_ctl {
    int hist_n, step;
    uint32_t b, below, cnt; /* the bucket a radix level chose; counts below it and in it */
    unsigned long long mass_below, cut;
    unsigned long long kmin, kmax; /* top-p: the keys of a linear bucket */
    int ncomp;                     /* ... and its tokens copied into the list */
    int tok, overflow;
    uint32_t bound;           /* top-k candidates: distance from the max at most this */
    int wcount[SAMPLE_WARPS]; /* candidates each warp appended */
};

/* Scratch of the block reductions, one slot a warp. */
struct sample_red {
    double d[SAMPLE_WARPS];
    float f[SAMPLE_WARPS], g[SAMPLE_WARPS];
    int i[SAMPLE_WARPS], j[SAMPLE_WARPS];
    uint32_t u[SAMPLE_WARPS];
};

/* Stage timing for tuning: built with -DGPTC_SAMPLE_PROFILE (sample.cu and
 * tests/gpu/test_sample.cu, by hand), thread 0 records clock64() at each
 * stage boundary, cuda_sample_profile() returns them and test_sample
 * --timing prints the stages. Off in normal builds. */
#ifdef GPTC_SAMPLE_PROFILE
__device__ long long g_sample_prof[16];
#define PROF(k) (threadIdx.x == 0 ? (void)(g_sample_prof[k] = clock64()) : (void)0)
#else
#define PROF(k) ((void)0)
#endif

__device__ __forceinline__ int bitlen32(uint32_t v) { return 32 - __clz((int)v); }
__device__ __forceinline__ uint32_t lanes_below() { return (1u << (threadIdx.x & 31)) - 1; }

/* The float's order-preserving image: a larger float has a larger key. -0
 * becomes +0 first, so that the two compare equal here as they do as floats. */
__device__ __forceinline__ uint32_t ukey(float s) {
    uint32_t b = __float_as_uint(__fadd_rn(s, 0.0f));
    return b ^ ((b >> 31) ? 0xffffffffu : 0x80000000u);
}

__device__ __forceinline__ float fromkey(uint32_t k) {
    return __uint_as_float(k & 0x80000000u ? k ^ 0x80000000u : ~k);
}

/* The largest distance a radix prefix P of the top 32 - hi bits admits. */
__device__ __forceinline__ uint32_t prefix_bound(uint32_t P, int hi) {
    return (uint32_t)min((((unsigned long long)P + 1) << hi) - 1, 0xffffffffull);
}

/* gptc_splitmix64 and sample_uniform of the CPU, bit for bit. */
__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
__device__ __forceinline__ double uniform(uint64_t seed, uint64_t step) {
    uint64_t r = splitmix64(splitmix64(seed) ^ (step * 0xd1b54a32d192ed03ull));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

/* Four scores from i (fewer past V: -inf), with one 16-byte load when it can. */
__device__ __forceinline__ void ld4(const float *p, int i, int V, bool vec, float e[4]) {
    if (vec && i + 3 < V) {
        float4 v = *reinterpret_cast<const float4 *>(p + i);
        e[0] = v.x, e[1] = v.y, e[2] = v.z, e[3] = v.w;
        return;
    }
#pragma unroll
    for (int u = 0; u < 4; u++) e[u] = i + u < V ? p[i + u] : -INFINITY;
}
__device__ __forceinline__ void st4(float *p, int i, int V, bool vec, const float e[4]) {
    if (vec && i + 3 < V) {
        *reinterpret_cast<float4 *>(p + i) = make_float4(e[0], e[1], e[2], e[3]);
        return;
    }
#pragma unroll
    for (int u = 0; u < 4; u++)
        if (i + u < V) p[i + u] = e[u];
}

/* Each warp's contiguous share of the vocabulary: a multiple of 128 entries
 * (a float4 a lane), so accesses coalesce, and the shares in warp order are
 * index order, which lets each warp append its picks in order on its own. */
struct warp_chunk {
    int beg, nit; /* first entry; iterations of 128 */
    __device__ __forceinline__ warp_chunk(int V) {
        int ch = (V + 32 * 128 - 1) / (32 * 128) * 128;
        beg = (threadIdx.x >> 5) * ch;
        int end = min(V, beg + ch);
        nit = end > beg ? (end - beg + 127) >> 7 : 0;
    }
    __device__ __forceinline__ int at(int it) const { return beg + it * 128 + (threadIdx.x & 31) * 4; }
};

template <typename V> __device__ __forceinline__ V warp_add(V v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

/* Exclusive prefix sum in thread order, and the block's total. Every sum is
 * taken in a fixed order, so doubles come out the same run to run. */
template <typename V> __device__ __forceinline__ V block_scan(V v, V *red, V *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    V inc = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        V y = __shfl_up_sync(FULL_MASK, inc, o);
        if (lane >= o) inc += y;
    }
    V exc = __shfl_up_sync(FULL_MASK, inc, 1);
    if (lane == 0) exc = V(0);
    __syncthreads(); /* red may still be read by a previous reduction */
    if (lane == 31) red[warp] = inc;
    __syncthreads();
    V w = red[lane];
    *total = warp_add(w);
    return warp_add(lane < warp ? w : V(0)) + exc;
}

/* Two int maxima over the block, in one round of barriers. */
__device__ __forceinline__ void block_max2(int &a, int &b, sample_red &red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        a = max(a, __shfl_xor_sync(FULL_MASK, a, o)), b = max(b, __shfl_xor_sync(FULL_MASK, b, o));
    __syncthreads();
    if (lane == 0) red.i[warp] = a, red.j[warp] = b;
    __syncthreads();
    a = red.i[lane], b = red.j[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        a = max(a, __shfl_xor_sync(FULL_MASK, a, o)), b = max(b, __shfl_xor_sync(FULL_MASK, b, o));
}

/* The max, the min and a count over the block, in one round of barriers. */
__device__ __forceinline__ void block_maxmincount(float &mx, float &mn, int &n, sample_red &red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
        mn = fminf(mn, __shfl_xor_sync(FULL_MASK, mn, o));
        n += __shfl_xor_sync(FULL_MASK, n, o);
    }
    __syncthreads();
    if (lane == 0) red.f[warp] = mx, red.g[warp] = mn, red.i[warp] = n;
    __syncthreads();
    mx = red.f[lane], mn = red.g[lane], n = red.i[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
        mn = fminf(mn, __shfl_xor_sync(FULL_MASK, mn, o));
        n += __shfl_xor_sync(FULL_MASK, n, o);
    }
}

__device__ __forceinline__ void block_argmax(float &v, int &i, sample_red &red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(FULL_MASK, v, o), __shfl_xor_sync(FULL_MASK, i, o));
    __syncthreads();
    if (lane == 0) red.f[warp] = v, red.i[warp] = i;
    __syncthreads();
    v = red.f[lane], i = red.i[lane];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        better(v, i, __shfl_xor_sync(FULL_MASK, v, o), __shfl_xor_sync(FULL_MASK, i, o));
}

/* The candidates a stage works on: the whole vocabulary, or the list. */
struct full_view {
    float *x;
    int n;
    __device__ __forceinline__ float score(int j) const { return x[j]; }
    __device__ __forceinline__ int id(int j) const { return j; }
};
struct list_view {
    float *s;
    int *ids;
    int n;
    __device__ __forceinline__ float score(int j) const { return s[j]; }
    __device__ __forceinline__ int id(int j) const { return ids[j]; }
};

/* The state of a radix select over 32-bit distances: the candidates share
 * the top 32 - hi bits P; krem of them are still to be kept. */
struct radix32 {
    int hi;
    uint32_t P, krem, before, kept;
    /* Matching P: (d & mask) == pre, without a shift by 32. */
    __device__ __forceinline__ uint32_t mask() const { return hi >= 32 ? 0u : 0xffffffffu << hi; }
    __device__ __forceinline__ uint32_t pre() const { return hi >= 32 ? 0u : P << hi; }
};

/*
 * One pass of a top-k level over the vocabulary: counts the candidates of
 * the current prefix by their next digit (bits [lo, lo + nb)), and with
 * `app` appends every finite score whose distance is at most D0 to the warp's
 * slots of the list, in index order. Sets ctl.overflow when a warp has more
 * than WARP_SLOTS of them.
 */
__device__ __forceinline__ void topk_pass(const float *x, int V, bool vec, uint32_t uM,
                                          const radix32 &r, int lo, uint32_t nb, uint32_t *hist,
                                          bool count, bool app, uint32_t D0, float *ls, int *li,
                                          sample_ctl &ctl) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const warp_chunk wc(V);
    const uint32_t mask = r.mask(), pre = r.pre();
    int n = 0; /* appended by this warp */
    for (int it = 0; it < wc.nit; it++) {
        const int i = wc.at(it);
        float e[4];
        ld4(x, i, V, vec, e);
        bool f[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            bool fin = e[u] > -INFINITY;
            uint32_t d = uM - ukey(e[u]);
            if (count && fin && (d & mask) == pre) atomicAdd(&hist[(d >> lo) & (nb - 1)], 1u);
            f[u] = app && fin && d <= D0;
        }
        if (!app) continue;
        uint32_t c = (uint32_t)f[0] + f[1] + f[2] + f[3];
        if (!__any_sync(FULL_MASK, c)) continue;
        uint32_t inc = c;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t y = __shfl_up_sync(FULL_MASK, inc, o);
            if (lane >= o) inc += y;
        }
        int at = n + (int)(inc - c);
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (f[u]) {
                if (at < WARP_SLOTS) ls[warp * WARP_SLOTS + at] = e[u], li[warp * WARP_SLOTS + at] = i + u;
                at++;
            }
        n += (int)__shfl_sync(FULL_MASK, inc, 31);
    }
    if (app && lane == 0) {
        ctl.wcount[warp] = min(n, WARP_SLOTS);
        if (n > WARP_SLOTS) ctl.overflow = 1;
    }
}

/* The same count over the appended candidates (slot s of warp s / WARP_SLOTS). */
__device__ __forceinline__ void topk_pass_list(uint32_t uM, const radix32 &r, int lo, uint32_t nb,
                                               uint32_t *hist, const float *ls,
                                               const sample_ctl &ctl) {
    const uint32_t mask = r.mask(), pre = r.pre();
    for (int s = threadIdx.x; s < LIST_CAP; s += SAMPLE_THREADS) {
        if ((s % WARP_SLOTS) >= ctl.wcount[s / WARP_SLOTS]) continue;
        uint32_t d = uM - ukey(ls[s]);
        if ((d & mask) == pre) atomicAdd(&hist[(d >> lo) & (nb - 1)], 1u);
    }
}

/* After a level's count: the bucket holding the krem-th smallest distance,
 * and the state one digit down. Zeroes the histogram for the next level. */
__device__ __forceinline__ void topk_pick(radix32 &r, int lo, uint32_t nb, uint32_t *hist,
                                          sample_red &red, sample_ctl &ctl) {
    const int tid = threadIdx.x;
    uint32_t c = (uint32_t)tid < nb ? hist[tid] : 0, total;
    hist[tid] = 0;
    uint32_t ex = block_scan(c, red.u, &total);
    if (ex < r.krem && r.krem <= ex + c) ctl.b = tid, ctl.below = ex, ctl.cnt = c;
    __syncthreads();
    const uint32_t b = ctl.b, below = ctl.below, cnt = ctl.cnt;
    r.krem -= below;
    r.before += below;
    r.P = (r.P << (r.hi - lo)) | b;
    r.hi = lo;
    r.kept = r.before + cnt;
}

/* A warp: the distance bound D (from uMp) of top-k's k-th largest score,
 * widened with the temperature still to apply (temp) to every lower score
 * whose quotient by T rounds to the bound's; 0xffffffff (no bound) when it
 * admits every finite score anyway (vminp: their min). */
__device__ __noinline__ uint32_t warp_widen(uint32_t D, uint32_t uMp, float vminp, bool temp, float T) {
    const int lane = threadIdx.x & 31;
    const uint32_t kmin = ukey(vminp);
    if ((unsigned long long)D >= (unsigned long long)(uMp - kmin)) return 0xffffffffu;
    if (!temp) return D;
    /* The smallest key whose quotient reaches the bound's: a 32-way search,
     * each lane testing one point of the interval. */
    uint32_t hi = uMp - D, lo = kmin;
    const float q = __fdiv_rn(fromkey(hi), T);
    while (lo < hi) {
        const uint32_t kl = lo + (uint32_t)(((unsigned long long)(hi - lo) * (lane + 1)) >> 5);
        const int f = __ffs(__ballot_sync(FULL_MASK, __fdiv_rn(fromkey(kl), T) >= q)) - 1;
        const uint32_t kf = __shfl_sync(FULL_MASK, kl, f), kp = __shfl_sync(FULL_MASK, kl, max(f - 1, 0));
        lo = f ? kp + 1 : lo;
        hi = kf;
    }
    return uMp - hi;
}

/*
 * Warp 0: a bound on the distance (from the max's key uMp) of every score
 * top-k can keep, from the per-thread maxima tmax: the k-th largest maximum
 * is no larger than the k-th largest score. With the temperature still to
 * apply (temp), the bound also admits every lower score whose quotient by T
 * rounds to the same value as that maximum's: the k-th largest quotient may
 * tie with them. 0xffffffff: no bound (fewer than k finite maxima). bins:
 * 256 counters, zero on entry and on return. Not inlined: its registers
 * would otherwise push the kernel's passes into spilling.
 */
__device__ __noinline__ uint32_t warp_topk_bound(const float *tmax, uint32_t uMp, uint32_t Rp, int k,
                                    bool temp, float T, float vminp, uint32_t *bins) {
    const int lane = threadIdx.x & 31;
    int nf = 0;
    for (int j = lane; j < SAMPLE_THREADS; j += 32) nf += tmax[j] > -INFINITY;
    if (warp_add(nf) < k) return 0xffffffffu;
    radix32 r = {bitlen32(Rp), 0, (uint32_t)k, 0, 0};
    while (r.hi > 0) {
        const int lo = max(r.hi - TOPP_BITS, 0), w = r.hi - lo;
        const uint32_t nb = 1u << w, mask = r.mask(), pre = r.pre();
        for (int j = lane; j < SAMPLE_THREADS; j += 32) {
            float v = tmax[j];
            uint32_t d = uMp - ukey(v);
            if (v > -INFINITY && (d & mask) == pre) atomicAdd(&bins[(d >> lo) & (nb - 1)], 1u);
        }
        __syncwarp();
        uint32_t c[8], cl = 0;
#pragma unroll
        for (int h = 0; h < 8; h++) c[h] = bins[lane * 8 + h], bins[lane * 8 + h] = 0, cl += c[h];
        uint32_t inc = cl;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t y = __shfl_up_sync(FULL_MASK, inc, o);
            if (lane >= o) inc += y;
        }
        const int f = __ffs(__ballot_sync(FULL_MASK, inc - cl < r.krem && r.krem <= inc)) - 1;
        uint32_t b = 0, below = inc - cl, cnt = 0;
        if (lane == f)
#pragma unroll
            for (int h = 0; h < 8; h++) {
                if (cnt == 0 && below + c[h] >= r.krem) b = lane * 8 + h, cnt = c[h];
                else if (cnt == 0) below += c[h];
            }
        b = __shfl_sync(FULL_MASK, b, f), below = __shfl_sync(FULL_MASK, below, f);
        cnt = __shfl_sync(FULL_MASK, cnt, f);
        r.krem -= below;
        r.P = (r.P << w) | b;
        r.hi = lo;
        __syncwarp();
        if (cnt == r.krem) break; /* the bucket is kept whole */
    }
    return warp_widen(prefix_bound(r.P, r.hi), uMp, vminp, temp, T);
}

/* Moves the entries `valid` accepts (entry j of LIST_CAP, score s) to the
 * front of the list in order, divided by T when `divide`. Returns their
 * count. */
template <typename Valid>
__device__ __forceinline__ int compact_list(float *ls, int *li, Valid valid, bool divide, float T,
                                            sample_red &red) {
    const int tid = threadIdx.x;
    float s[2];
    int id[2];
    bool v[2];
    uint32_t c = 0;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int j = 2 * tid + h;
        s[h] = ls[j], id[h] = li[j];
        v[h] = valid(j, s[h]);
        if (v[h] && divide) s[h] = __fdiv_rn(s[h], T);
        c += v[h];
    }
    uint32_t total, at = block_scan(c, red.u, &total); /* all reads precede its barriers */
#pragma unroll
    for (int h = 0; h < 2; h++)
        if (v[h]) ls[at] = s[h], li[at] = id[h], at++;
    __syncthreads();
    return (int)total;
}

/* Top-k over a list of n > k finite scores: the distance bound of the kept. */
__device__ __forceinline__ uint32_t topk_list_select(const float *ls, int n, uint32_t uM, uint32_t R,
                                                     int k, uint32_t *hist, sample_red &red,
                                                     sample_ctl &ctl) {
    radix32 r = {bitlen32(R), 0, (uint32_t)k, 0, (uint32_t)n};
    while (r.hi > 0) {
        const int lo = max(r.hi - TOPK_BITS, 0);
        const uint32_t nb = 1u << (r.hi - lo), mask = r.mask(), pre = r.pre();
        for (int j = threadIdx.x; j < n; j += SAMPLE_THREADS) {
            uint32_t d = uM - ukey(ls[j]);
            if ((d & mask) == pre) atomicAdd(&hist[(d >> lo) & (nb - 1)], 1u);
        }
        __syncthreads();
        topk_pick(r, lo, nb, hist, red, ctl);
        if (r.kept - r.before == r.krem) break;
    }
    return prefix_bound(r.P, r.hi);
}

/* warp_top_p's order: a below b when its score is lower, or equal with a
 * higher id. */
__device__ __forceinline__ bool asc_before(float sa, int ia, float sb, int ib) {
    return sa < sb || (sa == sb && ia > ib);
}

/*
 * Warp 0 alone, for a list of n <= 64 finite scores in index order (lane l
 * holds entries l and l + 32): top-k when k > 0 (the list then holds every
 * score top-k can keep: those with fewer than k larger ones stay), top-p
 * (each token's ascending cumulative mass taken directly as the sum over the
 * tokens below it, in the same fixed point as topp_descent), the draw, and
 * the list back into the logits. No block barrier: the other warps are done.
 * Returns the token.
 */
__device__ int warp_tail(const float *ls, const int *li, int n, int k, float top_p, float M,
                         double u, float *logits) {
    const int lane = threadIdx.x & 31, halves = n > 32 ? 2 : 1;
    float s[2];
    int id[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int j = lane + 32 * h;
        s[h] = j < n ? ls[j] : -INFINITY;
        id[h] = j < n ? li[j] : 0;
    }
    if (k > 0 && k < n) {
        int g0 = 0, g1 = 0;
        for (int j = 0; j < n; j++) {
            const float v = ls[j];
            g0 += v > s[0], g1 += v > s[1];
        }
        if (g0 >= k) s[0] = -INFINITY;
        if (g1 >= k) s[1] = -INFINITY;
    }
    const int nf = warp_add((int)(s[0] > -INFINITY) + (int)(s[1] > -INFINITY));
    if (top_p < 1.0f && nf > 1) {
        const int S = 62 - bitlen32((uint32_t)nf);
        unsigned long long W[2], below[2] = {0, 0};
        int above[2] = {0, 0};
#pragma unroll
        for (int h = 0; h < 2; h++)
            W[h] = s[h] > -INFINITY ? __double2ull_rn(scalbn(exp((double)s[h] - (double)M), S)) : 0;
        const unsigned long long total = warp_add(W[0] + W[1]);
        const unsigned long long cut = (unsigned long long)((1.0 - (double)top_p) * (double)total);
        for (int hh = 0; hh < halves; hh++)
            for (int src = 0; src < 32; src++) {
                const float sv = __shfl_sync(FULL_MASK, hh ? s[1] : s[0], src);
                const int iv = __shfl_sync(FULL_MASK, hh ? id[1] : id[0], src);
                const unsigned long long wv = __shfl_sync(FULL_MASK, hh ? W[1] : W[0], src);
                if (!(sv > -INFINITY)) continue;
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    if (asc_before(sv, iv, s[h], id[h])) below[h] += wv;
                    else if (asc_before(s[h], id[h], sv, iv)) above[h]++;
                }
            }
#pragma unroll
        for (int h = 0; h < 2; h++)
            if (s[h] > -INFINITY && above[h] > 0 && below[h] + W[h] <= cut) s[h] = -INFINITY;
    }
    /* The draw: inclusive sums in index order (lanes' first entries, then
     * their second), the first that exceeds u times the total. */
    double w0 = s[0] > -INFINITY ? exp((double)__fsub_rn(s[0], M)) : 0.0;
    double w1 = s[1] > -INFINITY ? exp((double)__fsub_rn(s[1], M)) : 0.0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double y0 = __shfl_up_sync(FULL_MASK, w0, o), y1 = __shfl_up_sync(FULL_MASK, w1, o);
        if (lane >= o) w0 += y0, w1 += y1;
    }
    w1 += __shfl_sync(FULL_MASK, w0, 31);
    const double target = u * __shfl_sync(FULL_MASK, w1, 31);
    const uint32_t c0 = __ballot_sync(FULL_MASK, s[0] > -INFINITY && w0 > target);
    const uint32_t c1 = __ballot_sync(FULL_MASK, s[1] > -INFINITY && w1 > target);
    const uint32_t f0 = __ballot_sync(FULL_MASK, s[0] > -INFINITY);
    const uint32_t f1 = __ballot_sync(FULL_MASK, s[1] > -INFINITY);
    int tok;
    if (c0) tok = __shfl_sync(FULL_MASK, id[0], __ffs(c0) - 1);
    else if (c1) tok = __shfl_sync(FULL_MASK, id[1], __ffs(c1) - 1);
    else if (f1) tok = __shfl_sync(FULL_MASK, id[1], 31 - __clz((int)f1)); /* rounding: the last */
    else if (f0) tok = __shfl_sync(FULL_MASK, id[0], 31 - __clz((int)f0));
    else tok = 0;
#pragma unroll
    for (int h = 0; h < 2; h++)
        if (lane + 32 * h < n) logits[id[h]] = s[h];
    return tok;
}

/*
 * One pass over the vocabulary that drops the finite scores `keep` refuses
 * (to -inf) and, with `build`, appends the kept ones in index order to the
 * list: the path for many survivors. The shared-memory variant also writes
 * the processed scores out to the logits and, without `build`, keeps its copy
 * current for the stages that follow. Element i = base + u * SAMPLE_THREADS
 * + tid: a warp's ballot per u ranks its lanes, and a scan of the (u, warp)
 * counts ranks the warps, which is index order. Returns the count kept when
 * building.
 */
template <bool SMEM, typename Keep>
__device__ __forceinline__ int filter_full(float *x, float *logits, int V, Keep keep, bool build,
                                           float *ls, int *li, uint32_t *wcnt, sample_red &red) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int run = 0;
    for (int base = 0; base < V; base += SAMPLE_THREADS * FBATCH) {
        float s[FBATCH];
        uint32_t bal[FBATCH];
#pragma unroll
        for (int u = 0; u < FBATCH; u++) {
            int i = base + u * SAMPLE_THREADS + tid;
            s[u] = i < V ? x[i] : -INFINITY;
        }
#pragma unroll
        for (int u = 0; u < FBATCH; u++) {
            int i = base + u * SAMPLE_THREADS + tid;
            bool fin = s[u] > -INFINITY, k = fin && keep(s[u], i);
            if (i < V) {
                if (SMEM) logits[i] = k ? s[u] : -INFINITY;
                if (fin && !k && (!SMEM || !build)) x[i] = -INFINITY;
            }
            if (build) {
                bal[u] = __ballot_sync(FULL_MASK, k);
                if (lane == 0) wcnt[u * SAMPLE_WARPS + warp] = __popc(bal[u]);
            }
        }
        if (!build) continue;
        __syncthreads();
        uint32_t c = tid < FBATCH * SAMPLE_WARPS ? wcnt[tid] : 0, total;
        uint32_t ex = block_scan(c, red.u, &total); /* its barriers order the reads of wcnt */
        if (tid < FBATCH * SAMPLE_WARPS) wcnt[tid] = ex;
        __syncthreads();
#pragma unroll
        for (int u = 0; u < FBATCH; u++)
            if ((bal[u] >> lane) & 1) {
                int at = run + (int)wcnt[u * SAMPLE_WARPS + warp] + __popc(bal[u] & lanes_below());
                if (at < LIST_CAP) ls[at] = s[u], li[at] = base + u * SAMPLE_THREADS + tid;
            }
        run += (int)total;
        __syncthreads(); /* wcnt is rewritten by the next tile */
    }
    __syncthreads(); /* later stages read other threads' elements */
    return run;
}

/* warp_top_p's ascending order as a 64-bit key: the score's distance below
 * the bound Rc, then V - 1 - id so that ties go to the lower id. */
struct topp_key {
    uint32_t uM, Rc;
    int ib, V;
    __device__ __forceinline__ unsigned long long operator()(float s, int id) const {
        uint32_t d = uM - ukey(s);
        return ((unsigned long long)(Rc - d) << ib) | (unsigned long long)(V - 1 - id);
    }
};

/*
 * Top-p on a view of ncand > 1 finite candidates: the rule "drop iff
 * key >> *hi < *P", where the key at (*hi, *P) is the first one in ascending
 * order whose cumulative probability exceeds 1 - top_p (or the top token,
 * which is never dropped). Masses are exp(s - max) in fixed point with
 * 2^S for the max, S chosen so that the sum fits 62 bits; the cut is
 * (1 - top_p) times that sum. A level ends early on a bucket of one token.
 * cnt and mass must be zero on entry; they are on return. Returns the count
 * dropped.
 *
 * With vlo (a lower bound of the finite scores, below M) the first level
 * buckets the scores linearly between vlo and M instead of by the key's top
 * digit: the key is a float's order-preserving bits, whose top digits are
 * nearly the exponent, so a vocabulary of logits within a few units of each
 * other (every bucket ~2 exponents) piled into a handful of buckets level
 * after level - each level a pass over the vocabulary with a double exp and
 * two contended atomics an element (H200, gpt2's logits, top-p 0.9 without
 * top-k: 535 us a step). The linear bucket of a score is monotone in it, so
 * the buckets are ranges of the ascending order and their integer masses
 * add up to the same cumulative sums: the crossing token, and so the kept
 * set, is the same. The levels after it run on the chosen bucket's keys
 * only, and the result is returned as the crossing token's whole key
 * (*hi = 0): "drop iff key < it" is the same rule.
 */
template <typename View>
__device__ __forceinline__ int topp_descent(const View v, float M, topp_key key, int ncand,
                                            float top_p, uint32_t *cnt, unsigned long long *mass,
                                            sample_ctl &ctl, int *hi_out,
                                            unsigned long long *P_out, float vlo = INFINITY,
                                            float *ls = NULL, int *li = NULL) {
    const int tid = threadIdx.x, lane = tid & 31;
    const int S = 62 - bitlen32((uint32_t)ncand);
    const double cutf = 1.0 - (double)top_p;
    int hi = bitlen32(key.Rc) + key.ib, dropped = 0;
    unsigned long long P = 0, below = 0, cut = 0;
    bool first = true;
    /* Warp 0: the bucket of nb where the cumulative mass crosses the cut
     * (into ctl), the buckets zeroed again. Each lane sums eight bins, a
     * warp scan finds the lane where the mass crosses the cut, and that
     * lane walks its bins. */
    auto search = [&](int nb) {
        const int per = (nb + 31) / 32, d0 = min(lane * per, nb), d1 = min(d0 + per, nb);
        unsigned long long m = 0;
        uint32_t c = 0;
        for (int d = d0; d < d1; d++) m += mass[d], c += cnt[d];
        unsigned long long mi = m;
        uint32_t ci = c;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            unsigned long long ym = __shfl_up_sync(FULL_MASK, mi, o);
            uint32_t yc = __shfl_up_sync(FULL_MASK, ci, o);
            if (lane >= o) mi += ym, ci += yc;
        }
        if (first) cut = (unsigned long long)(cutf * (double)__shfl_sync(FULL_MASK, mi, 31));
        uint32_t cross = __ballot_sync(FULL_MASK, below + mi > cut);
        /* No crossing: the top token, in the last non-empty bucket. */
        int f = cross ? __ffs(cross) - 1 : 31 - __clz((int)__ballot_sync(FULL_MASK, c > 0));
        if (lane == f) {
            unsigned long long run = below + mi - m;
            uint32_t crun = ci - c;
            int b = d0;
            unsigned long long rb = 0;
            uint32_t cb = 0;
            for (int d = d0; d < d1; d++) {
                if (cross ? run + mass[d] > cut : cnt[d] > 0) {
                    b = d, rb = run, cb = crun;
                    if (cross) break;
                }
                run += mass[d], crun += cnt[d];
            }
            ctl.b = (uint32_t)b, ctl.mass_below = rb, ctl.below = cb, ctl.cnt = cnt[b];
            ctl.cut = cut;
        }
        for (int d = d0; d < d1; d++) cnt[d] = 0, mass[d] = 0; /* each lane its own bins */
    };
    auto add = [&](int d, float s) {
        double e = exp((double)s - (double)M);
        atomicAdd(&cnt[d], 1u);
        atomicAdd(&mass[d], __double2ull_rn(scalbn(e, S)));
    };
    /* The first level's linear buckets, when they spread anything. */
    const float span = M - vlo;
    const bool lin = span > 0.0f && span < INFINITY;
    const float scale = lin ? (float)(1 << TOPP_BITS) / span : 0.0f;
    auto lbin = [=](float s) { return min(max((int)((s - vlo) * scale), 0), (1 << TOPP_BITS) - 1); };
    int b0 = 0;
    bool comp = false; /* the chosen linear bucket's tokens are in ls / li */
    if (lin) {
        for (int j = tid; j < v.n; j += SAMPLE_THREADS) {
            float s = v.score(j);
            if (s > -INFINITY) add(lbin(s), s);
        }
        __syncthreads();
        if (tid < 32) search(1 << TOPP_BITS);
        if (tid == 0) ctl.kmin = ~0ull, ctl.kmax = 0, ctl.ncomp = 0;
        __syncthreads();
        cut = ctl.cut, first = false;
        below = ctl.mass_below;
        dropped += (int)ctl.below;
        b0 = (int)ctl.b;
        /* The chosen bucket's keys: a range of the order, whose common
         * prefix the levels below start from; and its tokens, in any order
         * (the levels add integers), into the list when they fit, so that
         * the levels below walk them rather than the vocabulary. */
        comp = ls && ctl.cnt <= LIST_CAP;
        unsigned long long kn = ~0ull, kx = 0;
        for (int j = tid; j < v.n; j += SAMPLE_THREADS) {
            float s = v.score(j);
            if (s > -INFINITY && lbin(s) == b0) {
                unsigned long long K = key(s, v.id(j));
                kn = min(kn, K), kx = max(kx, K);
                if (comp) {
                    int at = atomicAdd(&ctl.ncomp, 1);
                    ls[at] = s, li[at] = v.id(j);
                }
            }
        }
        if (kx >= kn) atomicMin(&ctl.kmin, kn), atomicMax(&ctl.kmax, kx);
        __syncthreads();
        const unsigned long long diff = ctl.kmax ^ ctl.kmin;
        hi = diff ? 64 - __clzll((long long)diff) : 0;
        P = ctl.kmax >> hi;
        if (ctl.cnt == 1 || hi == 0) hi = 0; /* one token: its key is the answer */
    }
    const int n = comp ? ctl.cnt : v.n;
    /* The j-th token the levels below look at: the list's, or the view's
     * restricted to the chosen linear bucket (false when outside it). */
    auto at = [&](int j, float &s, int &id) {
        if (comp) {
            s = ls[j], id = li[j];
            return true;
        }
        s = v.score(j), id = v.id(j);
        return s > -INFINITY && (!lin || lbin(s) == b0);
    };
    while (hi > 0) {
        const int lo = max(hi - TOPP_BITS, 0), w = hi - lo, nb = 1 << w;
        for (int j = tid; j < n; j += SAMPLE_THREADS) {
            float s;
            int id;
            if (!at(j, s, id)) continue;
            unsigned long long K = key(s, id);
            if ((K >> hi) != P) continue;
            add((int)((K >> lo) & (unsigned long long)(nb - 1)), s);
        }
        __syncthreads();
        if (tid < 32) search(nb);
        __syncthreads();
        cut = ctl.cut, first = false;
        below = ctl.mass_below;
        dropped += (int)ctl.below;
        P = (P << w) | ctl.b;
        hi = lo;
        if (ctl.cnt == 1) break;
    }
    if (lin && hi > 0) {
        /* A bucket of one token: its key, for the rule "drop iff key < it"
         * (a prefix would also take tokens of lower linear buckets). */
        for (int j = tid; j < n; j += SAMPLE_THREADS) {
            float s;
            int id;
            if (!at(j, s, id)) continue;
            unsigned long long K = key(s, id);
            if ((K >> hi) == P) ctl.kmin = K;
        }
        __syncthreads();
        P = ctl.kmin, hi = 0;
        __syncthreads(); /* ctl is the caller's again */
    }
    *hi_out = hi;
    *P_out = P;
    return dropped;
}

/*
 * sample_categorical on a view: the first candidate, in index order, at which
 * the cumulative exp(s - max) exceeds u times their sum; the last finite one
 * when rounding leaves none; 0 when there is no finite score.
 */
template <typename View>
__device__ __forceinline__ int draw(const View v, float M, double u, sample_red &red,
                                    sample_ctl &ctl) {
    const int tid = threadIdx.x;
    const int per = (v.n + SAMPLE_THREADS - 1) / SAMPLE_THREADS, j0 = min(tid * per, v.n),
              j1 = min(j0 + per, v.n);
    double sum = 0;
    int last = -1;
    for (int j = j0; j < j1; j++) {
        float s = v.score(j);
        if (s > -INFINITY) sum += exp((double)__fsub_rn(s, M)), last = v.id(j);
    }
    double total, B = block_scan(sum, red.d, &total);
    const double target = u * total;
    /* The chunk where the running sum crosses the target: the last one that
     * starts at or below it (and holds mass). */
    int owner = sum > 0 && B <= target ? tid : -1;
    block_max2(owner, last, red);
    if (tid == owner) {
        double cum = 0;
        int pick = -1;
        for (int j = j0; j < j1; j++) {
            float s = v.score(j);
            if (!(s > -INFINITY)) continue;
            cum += exp((double)__fsub_rn(s, M));
            if (B + cum > target) {
                pick = v.id(j);
                break;
            }
        }
        ctl.tok = pick;
    }
    __syncthreads();
    int tok = owner >= 0 ? ctl.tok : -1;
    return tok >= 0 ? tok : last >= 0 ? last : 0;
}

/* 4., 5. on a list of ncand finite scores in index order (with kpend > 0,
 * every score top-k can keep, top-k still to apply): top-p, the draw, and the
 * list back into the logits. The token is valid in thread 0. */
__device__ __forceinline__ int list_tail(float *ls, int *li, int ncand, int kpend, const cuda_sampler &p,
                                         float M, topp_key key, double u, float *logits, uint32_t *pcnt,
                                         unsigned long long *pmass, sample_red &red, sample_ctl &ctl) {
    const int tid = threadIdx.x;
    if (ncand <= 64) {
        /* A short list: top-p and the draw in warp 0 alone. */
        return tid < 32 ? warp_tail(ls, li, ncand, kpend, p.top_p, M, u, logits) : 0;
    }
    if (p.top_p < 1.0f && ncand > 1) {
        int phi;
        unsigned long long pP;
        const list_view lv = {ls, li, ncand};
        topp_descent(lv, M, key, ncand, p.top_p, pcnt, pmass, ctl, &phi, &pP);
        for (int j = tid; j < ncand; j += SAMPLE_THREADS) {
            float v = ls[j];
            if (v > -INFINITY && (key(v, li[j]) >> phi) < pP) {
                ls[j] = -INFINITY;
                logits[li[j]] = -INFINITY;
            }
        }
        __syncthreads();
    }
    PROF(5);
    const int next = draw(list_view{ls, li, ncand}, M, u, red, ctl);
    for (int j = tid; j < ncand; j += SAMPLE_THREADS)
        if (ls[j] > -INFINITY) logits[li[j]] = ls[j];
    return next;
}

/* One thread, at a step's end: the token out, the count of draws on, and with
 * pos the position on and the token into argmax_kernel's ring. */
__device__ __forceinline__ void put_token(int next, cuda_sample_state *state, int step, int32_t *token,
                                          int32_t *pos, int32_t *ring, int ring_mask) {
    *token = next;
    state->step = step + 1;
    if (pos) {
        int32_t np = *pos + 1;
        *pos = np;
        if (ring) ring[np & ring_mask] = next;
    }
}

/* proc_repetition_penalty's rule for one score. */
__device__ __forceinline__ float penalize(float v, float pen) {
    return v < 0 ? __fmul_rn(v, pen) : __fdiv_rn(v, pen);
}

/* The block's shared memory, one instance whichever kernel and stage uses
 * it (a function-scope __shared__ variable is one per block). */
struct sample_shared {
    uint32_t area[2 * LIST_CAP]; /* the list: scores, then ids */
    uint32_t khist[1 << TOPK_BITS];
    uint32_t pcnt[1 << TOPP_BITS];
    unsigned long long pmass[1 << TOPP_BITS];
    uint32_t wcnt[FBATCH * SAMPLE_WARPS];
    sample_red red;
    sample_ctl ctl;
    cuda_sampler p; /* read by every thread: kept out of registers */
};
__device__ __forceinline__ sample_shared &sample_sh() {
    __shared__ sample_shared sh;
    return sh;
}

/* One sampling step by the whole block (cuda_sample's contract); the token
 * appended comes from *in_token, the one drawn goes to *token. `prepped`:
 * the logits already hold the processors' scores (sample_mb_kernel). */
template <bool SMEM>
__device__ __forceinline__ void sample_block(const cuda_sampler *pp, cuda_sample_state *state,
                                             float *logits, int V, int32_t *hist, uint8_t *present,
                                             const int32_t *in_token, int32_t *token, int32_t *pos,
                                             int append, int32_t *ring, int ring_mask, bool prepped = false) {
    extern __shared__ float4 sample_dyn[];
    sample_shared &sh = sample_sh();
    uint32_t *area = sh.area, *khist = sh.khist, *pcnt = sh.pcnt, *wcnt = sh.wcnt;
    unsigned long long *pmass = sh.pmass;
    sample_red &red = sh.red;
    sample_ctl &ctl = sh.ctl;
    cuda_sampler &p = sh.p;
    float *x = SMEM ? reinterpret_cast<float *>(sample_dyn) : logits;
    float *ls = reinterpret_cast<float *>(area);
    int *li = reinterpret_cast<int *>(area + LIST_CAP);
    const int tid = threadIdx.x;
    const bool gvec = (reinterpret_cast<uintptr_t>(logits) & 15) == 0;

    khist[tid] = 0;
    if (tid < (1 << TOPP_BITS)) pcnt[tid] = 0, pmass[tid] = 0;
    pdl_wait(); /* the logits are the previous kernel's output */
#ifdef GPTC_SAMPLE_PROFILE
    if (tid == 0)
        for (int k = 1; k < 16; k++) g_sample_prof[k] = 0;
#endif
    PROF(0);
    if (tid == 0) {
        p = *pp;
        int n = state->hist_n;
        if (append) {
            int32_t t = *in_token;
            hist[n++] = t;
            if (present) present[t] = 1;
            state->hist_n = n;
        }
        ctl.hist_n = n, ctl.step = state->step, ctl.overflow = 0;
    }
    __syncthreads();
    const int n = ctl.hist_n, step = ctl.step;

    /* 1. Penalty, then bans: proc_repetition_penalty, proc_no_repeat_ngram,
     * the min-new-tokens loop. The penalty visits the tokens of the history
     * once each, through the mask, 16 bytes of it a load, all loads of a
     * thread issued before any is used. */
    if (!prepped && present && p.repetition_penalty != 1.0f) {
        const float pen = p.repetition_penalty;
        const int nv = (reinterpret_cast<uintptr_t>(present) & 15) == 0 ? V / 16 : 0;
        for (int q0 = 0; q0 < nv; q0 += 4 * SAMPLE_THREADS) {
            uint4 w[4];
#pragma unroll
            for (int h = 0; h < 4; h++) {
                const int q = q0 + h * SAMPLE_THREADS + tid;
                w[h] = q < nv ? reinterpret_cast<const uint4 *>(present)[q] : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int h = 0; h < 4; h++) {
                if ((w[h].x | w[h].y | w[h].z | w[h].w) == 0) continue;
                const int i0 = (q0 + h * SAMPLE_THREADS + tid) * 16;
                const uint32_t word[4] = {w[h].x, w[h].y, w[h].z, w[h].w};
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    if (!word[q]) continue;
                    float v[4];
#pragma unroll
                    for (int b = 0; b < 4; b++)
                        v[b] = (word[q] >> (8 * b)) & 0xff ? logits[i0 + 4 * q + b] : 0.0f;
#pragma unroll
                    for (int b = 0; b < 4; b++)
                        if ((word[q] >> (8 * b)) & 0xff)
                            logits[i0 + 4 * q + b] = penalize(v[b], pen);
                }
            }
        }
        for (int i = nv * 16 + tid; i < V; i += SAMPLE_THREADS)
            if (present[i]) logits[i] = penalize(logits[i], pen);
        __syncthreads();
    }
    if (!prepped && p.no_repeat_ngram_size > 0 && n + 1 >= p.no_repeat_ngram_size) {
        const int k = p.no_repeat_ngram_size - 1;
        const int32_t *tail = hist + n - k;
        for (int i = tid; i + k < n; i += SAMPLE_THREADS) {
            int j = 0;
            while (j < k && hist[i + j] == tail[j]) j++;
            if (j == k) logits[hist[i + k]] = -INFINITY;
        }
    }
    if (!prepped && step < p.min_new_tokens && tid < p.n_eos) logits[p.eos[tid]] = -INFINITY;
    __syncthreads();
    PROF(1);

    const bool sample = p.do_sample != 0;
    const warp_chunk wc(V);
    int next = 0;
    bool written = !SMEM || !sample; /* the logits hold the processed scores */
    if (!sample) {
        /* 2. Greedy: the logits are final; the argmax (the first index of
         * the max within a lane, the lowest across lanes). */
        float vmax = -INFINITY;
        int imax = INT_MAX;
        for (int it0 = 0; it0 < wc.nit; it0 += 2 * UNROLL) {
            float e[2 * UNROLL][4];
#pragma unroll
            for (int b = 0; b < 2 * UNROLL; b++) {
                if (it0 + b < wc.nit) ld4(logits, wc.at(it0 + b), V, gvec, e[b]);
                else e[b][0] = e[b][1] = e[b][2] = e[b][3] = -INFINITY;
            }
#pragma unroll
            for (int b = 0; b < 2 * UNROLL; b++)
#pragma unroll
                for (int u = 0; u < 4; u++)
                    if (e[b][u] > vmax) vmax = e[b][u], imax = wc.at(it0 + b) + u;
        }
        block_argmax(vmax, imax, red);
        next = imax == INT_MAX ? 0 : imax; /* no finite score: index 0, as sample_argmax */
        PROF(2);
    } else {
        /* 2. Temperature; max, min and count of the finite scores. With
         * top-k in shared memory (fast), each thread's max goes to tmax
         * and the division waits for the few candidates (defer). */
        const float T = p.temperature;
        const bool temp = T != 1.0f;
        const bool fast = SMEM && p.top_k > 0 && p.top_k < V && p.top_k <= SAMPLE_THREADS;
        const bool defer = fast && temp;
        float *tmax = reinterpret_cast<float *>(khist);
        float vmax = -INFINITY, vmin = INFINITY;
        int nfin = 0;
        for (int it0 = 0; it0 < wc.nit; it0 += UNROLL) {
            float e[UNROLL][4];
#pragma unroll
            for (int b = 0; b < UNROLL; b++) {
                if (it0 + b < wc.nit) ld4(logits, wc.at(it0 + b), V, gvec, e[b]);
                else e[b][0] = e[b][1] = e[b][2] = e[b][3] = -INFINITY;
            }
#pragma unroll
            for (int b = 0; b < UNROLL; b++) {
                if (it0 + b >= wc.nit) break;
                const int i = wc.at(it0 + b);
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    float v = temp && !defer ? __fdiv_rn(e[b][u], T) : e[b][u];
                    e[b][u] = v;
                    vmax = fmaxf(vmax, v);
                    if (v > -INFINITY) vmin = fminf(vmin, v), nfin++;
                }
                if (SMEM) {
                    const float ninf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
                    st4(x, i, V, true, e[b]);
                    st4(logits, i, V, gvec, ninf);
                } else if (temp) {
                    st4(logits, i, V, gvec, e[b]);
                }
            }
        }
        if (fast) tmax[tid] = vmax;
        block_maxmincount(vmax, vmin, nfin, red);
        const float Mp = vmax, vminp = vmin; /* before a deferred division */
        const float M = defer ? __fdiv_rn(Mp, T) : Mp;
        if (defer) vmin = __fdiv_rn(vminp, T);
        const uint32_t uM = ukey(M), R = nfin ? uM - ukey(vmin) : 0;
        const bool topk = p.top_k > 0 && p.top_k < V && p.top_k < nfin;
        PROF(2);

        /* 3. Top-k, and the list when the survivors fit it. */
        int ncand = nfin, kpend = 0; /* kpend: top-k still to apply to the list */
        uint32_t Rc = R;
        bool list = false, deferred = defer;
        if (fast && topk) {
            /* The candidates (a superset of the kept) into the warps' slots,
             * then the list, divided. */
            const uint32_t uMp = ukey(Mp);
            if (tid < 32) {
                uint32_t D = warp_topk_bound(tmax, uMp, uMp - ukey(vminp), p.top_k, defer, T, vminp, pcnt);
                if (tid == 0) ctl.bound = D;
            }
            __syncthreads();
            khist[tid] = 0;
            const radix32 none = {0, 0, 0, 0, 0};
            topk_pass(x, V, true, uMp, none, 0, 1, khist, false, true, ctl.bound, ls, li, ctl);
            __syncthreads();
            if (!ctl.overflow) {
                const sample_ctl &c = ctl;
                ncand = compact_list(ls, li,
                                     [&c](int j, float) { return (j % WARP_SLOTS) < c.wcount[j / WARP_SLOTS]; },
                                     deferred, T, red);
                deferred = false;
                list = written = true;
                kpend = p.top_k;
                if (ncand > 64 && p.top_k < ncand) {
                    const uint32_t Dk = topk_list_select(ls, ncand, uM, R, p.top_k, khist, red, ctl);
                    const int nc = ncand;
                    ncand = compact_list(ls, li,
                                         [=](int j, float v) { return j < nc && uM - ukey(v) <= Dk; },
                                         false, T, red);
                    Rc = min(R, Dk);
                    kpend = 0;
                }
            } else {
                __syncthreads(); /* every thread has read ctl.overflow */
                if (tid == 0) ctl.overflow = 0;
            }
        } else if (fast) {
            khist[tid] = 0;
        }
        if (deferred) {
            for (int it = 0; it < wc.nit; it++) {
                float e[4];
                ld4(x, wc.at(it), V, true, e);
#pragma unroll
                for (int u = 0; u < 4; u++) e[u] = __fdiv_rn(e[u], T);
                st4(x, wc.at(it), V, true, e);
            }
            __syncthreads();
        }
        if (topk && !list) {
            radix32 r = {bitlen32(R), 0, (uint32_t)p.top_k, 0, (uint32_t)nfin};
            /* slots: the candidates after the first digit go to the warps'
             * slots; src_list: the later digits count those copies. */
            bool slots = false, appended = false, src_list = false;
            uint32_t D0 = 0;
            for (int level = 0; r.hi > 0; level++) {
                const int lo = max(r.hi - TOPK_BITS, 0);
                const uint32_t nb = 1u << (r.hi - lo);
                const bool app = slots && !appended;
                if (src_list) topk_pass_list(uM, r, lo, nb, khist, ls, ctl);
                else topk_pass(x, V, SMEM || gvec, uM, r, lo, nb, khist, true, app, D0, ls, li, ctl);
                __syncthreads();
                if (app) {
                    appended = true;
                    src_list = !ctl.overflow;
                    slots = src_list;
                }
                topk_pick(r, lo, nb, khist, red, ctl);
                if (level == 0 && SMEM && r.kept <= LIST_CAP) slots = true, D0 = prefix_bound(r.P, r.hi);
                if (r.kept - r.before == r.krem) break; /* the bucket is kept whole */
            }
            const uint32_t Dk = prefix_bound(r.P, r.hi);
            Rc = min(R, Dk);
            ncand = (int)r.kept;
            if (slots && !appended) {
                topk_pass(x, V, true, uM, r, 0, 1, khist, false, true, Dk, ls, li, ctl);
                __syncthreads();
                slots = !ctl.overflow;
            }
            PROF(3);
            if (slots) {
                const sample_ctl &c = ctl;
                ncand = compact_list(ls, li,
                                     [&c, uM, Dk](int j, float v) {
                                         return (j % WARP_SLOTS) < c.wcount[j / WARP_SLOTS] &&
                                                uM - ukey(v) <= Dk;
                                     },
                                     false, T, red);
                list = true;
            } else {
                list = ncand <= LIST_CAP;
                int kept = filter_full<SMEM>(
                    x, logits, V, [=](float v, int) { return uM - ukey(v) <= Dk; }, list, ls, li,
                    wcnt, red);
                if (list) ncand = min(kept, LIST_CAP);
            }
            written = true;
        } else if (!topk && nfin <= LIST_CAP) {
            list = true;
            ncand = min(filter_full<SMEM>(x, logits, V, [](float, int) { return true; }, true, ls,
                                          li, wcnt, red),
                        LIST_CAP);
            written = true;
        }
        PROF(4);

        const double u = uniform(p.seed, (uint64_t)step);
        const topp_key key = {uM, Rc, bitlen32((uint32_t)(V - 1)), V};
        if (list) {
            next = list_tail(ls, li, ncand, kpend, p, M, key, u, logits, pcnt, pmass, red, ctl);
            PROF(6);
        } else {
            /* 4. Top-p. */
            if (p.top_p < 1.0f && ncand > 1) {
                int phi;
                unsigned long long pP;
                const full_view fv = {x, V};
                /* (the list is free: filter_full rebuilds it below) */
                ncand -= topp_descent(fv, M, key, ncand, p.top_p, pcnt, pmass, ctl, &phi, &pP, vmin, ls, li);
                list = ncand <= LIST_CAP;
                int kept = filter_full<SMEM>(
                    x, logits, V, [=](float v, int i) { return (key(v, i) >> phi) >= pP; },
                    list, ls, li, wcnt, red);
                if (list) ncand = min(kept, LIST_CAP);
                written = true;
            }
            PROF(5);

            /* 5. The draw, and the survivors back into the logits. */
            if (list) {
                next = draw(list_view{ls, li, ncand}, M, u, red, ctl);
                for (int j = tid; j < ncand; j += SAMPLE_THREADS)
                    if (ls[j] > -INFINITY) logits[li[j]] = ls[j];
            } else {
                next = draw(full_view{x, V}, M, u, red, ctl);
            }
            PROF(6);
        }
    }
    if (!written)
        for (int it = 0; it < wc.nit; it++) {
            float e[4];
            ld4(x, wc.at(it), V, true, e);
            st4(logits, wc.at(it), V, gvec, e);
        }
    if (tid == 0) put_token(next, state, step, token, pos, ring, ring_mask);
    PROF(7);
}

template <bool SMEM>
__global__ void __launch_bounds__(SAMPLE_THREADS, 1)
    sample_kernel(const cuda_sampler *pp, cuda_sample_state *state, float *logits, int V,
                  int32_t *hist, uint8_t *present, int32_t *token, int32_t *pos, int append, int32_t *ring,
                  int ring_mask) {
    sample_block<SMEM>(pp, state, logits, V, hist, present, token, token, pos, append, ring, ring_mask);
}

/* A block per row of a batch pass's logits; rows without a sampler exit. */
template <bool SMEM>
__global__ void __launch_bounds__(SAMPLE_THREADS, 1)
    sample_rows_kernel(const cuda_sample_row *rows, float *logits, int V, int32_t *tokens) {
    const cuda_sample_row *r = rows + blockIdx.x;
    if (!r->p) return;
    sample_block<SMEM>(r->p, r->state, logits + (size_t)blockIdx.x * V, V, r->hist, r->present,
                       &r->token, tokens + blockIdx.x, NULL, r->append, NULL, 0);
}

/*
 * Top-k over many blocks (cuda_sample with scratch): the passes over the
 * vocabulary, which one block walks at one SM's bandwidth, spread over
 * G = ceil(V / MB_ELEMS) blocks, a float4 a thread. Block b:
 *  - applies the processors to its share (the history as it will be after
 *    the append, which only the last block writes);
 *  - bounds top-k from its threads' maxima as warp_topk_bound does for the
 *    one-block kernel (here a radix select by the whole block, then
 *    warp_widen): its k-th largest maximum is no larger than the k-th
 *    largest score of the vocabulary, so every score below the bound's key
 *    (widened to the scores whose quotient by T ties with it) is dropped by
 *    top-k - those go to the logits as -inf, the others (the candidates)
 *    with their processed scores, and into the block's slots of the scratch
 *    in index order with the block's max, min, count of finite scores and
 *    the bound's key;
 *  - takes a ticket; the last block to finish raises the bound to the
 *    largest of the blocks' keys (the scores at or above it are a superset
 *    of the kept, closed upwards), gathers those candidates into the list
 *    in index order and finishes as the one-block kernel does on its list
 *    (the temperature, top-k on the list, list_tail). The kept set, the
 *    scores and the draw are the same.
 * Anything else - greedy, no top-k or a larger one, a block with more
 * candidates than its slots, a list that does not fit - is the one-block
 * kernel's work: block 0 runs it from the start, or the last block on the
 * logits as they are (the processors applied, only dominated scores
 * dropped, which changes no kept set and no draw).
 */
#define MB_ELEMS (4 * SAMPLE_THREADS) /* a block's share of the vocabulary */
#define MB_SLOTS 256                  /* candidates a block passes on */
#define MB_KMAX 128                   /* the largest top-k taken here */
#define MB_GMAX (FBATCH * SAMPLE_WARPS - 1) /* blocks: their offsets (and the total) sit in wcnt */

struct mb_part {
    float vmax, vmin;
    int nfin, cnt;
    uint32_t key; /* scores with a smaller key are dropped; 0: none proven */
    int pad[3];
};
struct mb_scratch {
    int ticket, pad[31];
    /* then mb_part part[G], float cv[G * MB_SLOTS], int ci[G * MB_SLOTS] */
};
__host__ __device__ __forceinline__ int mb_blocks(int V) { return (V + MB_ELEMS - 1) / MB_ELEMS; }
__host__ __device__ __forceinline__ size_t mb_bytes(int V) {
    return sizeof(mb_scratch) + (size_t)mb_blocks(V) * (sizeof(mb_part) + MB_SLOTS * (sizeof(float) + sizeof(int)));
}

template <bool SMEM>
__global__ void __launch_bounds__(SAMPLE_THREADS, 1)
    sample_mb_kernel(const cuda_sampler *pp, cuda_sample_state *state, float *logits, int V, int32_t *hist,
                     uint8_t *present, int32_t *token, int32_t *pos, int append, int32_t *ring,
                     int ring_mask, mb_scratch *scr) {
    sample_shared &sh = sample_sh();
    sample_red &red = sh.red;
    sample_ctl &ctl = sh.ctl;
    const cuda_sampler &p = sh.p;
    const int tid = threadIdx.x, G = gridDim.x, b = blockIdx.x;
    mb_part *part = reinterpret_cast<mb_part *>(scr + 1);
    float *cv = reinterpret_cast<float *>(part + G);
    int *ci = reinterpret_cast<int *>(cv + (size_t)G * MB_SLOTS);
#ifdef GPTC_SAMPLE_PROFILE
    long long clk[4];
    clk[0] = clock64();
#endif
    if (tid < (1 << TOPP_BITS)) sh.pcnt[tid] = 0, sh.pmass[tid] = 0;
    sh.khist[tid] = 0;
    pdl_wait(); /* the logits are the previous kernel's output */
    if (tid == 0) sh.p = *pp;
    __syncthreads();
    if (!(p.do_sample && p.top_k > 0 && p.top_k <= MB_KMAX && p.top_k < V)) {
        if (b == 0)
            sample_block<SMEM>(pp, state, logits, V, hist, present, token, token, pos, append, ring, ring_mask);
        return;
    }
    const int n0 = state->hist_n, step = state->step, n = n0 + (append ? 1 : 0);
    const int32_t t = append ? *token : -1;
    const int base = b * MB_ELEMS, i0 = base + 4 * tid;
    const bool gvec = (reinterpret_cast<uintptr_t>(logits) & 15) == 0;
    float e[4];
    ld4(logits, i0, V, gvec, e);

    /* 1. The processors on this block's share, as sample_block's stage 1. */
    if (present && p.repetition_penalty != 1.0f) {
        const float pen = p.repetition_penalty;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = i0 + u;
            if (i < V && (present[i] || i == t)) e[u] = penalize(e[u], pen);
        }
    }
    const bool ngram = p.no_repeat_ngram_size > 0 && n + 1 >= p.no_repeat_ngram_size;
    if (ngram || (step < p.min_new_tokens && p.n_eos > 0)) {
        float *stage = reinterpret_cast<float *>(sh.area);
#pragma unroll
        for (int u = 0; u < 4; u++) stage[4 * tid + u] = e[u];
        __syncthreads();
        if (ngram) {
            const int k = p.no_repeat_ngram_size - 1;
            auto H = [=](int j) { return j == n0 && append ? t : hist[j]; };
            for (int i = tid; i + k < n; i += SAMPLE_THREADS) {
                int j = 0;
                while (j < k && H(i + j) == H(n - k + j)) j++;
                const int bt = H(i + k) - base;
                if (j == k && bt >= 0 && bt < MB_ELEMS) stage[bt] = -INFINITY;
            }
        }
        if (step < p.min_new_tokens && tid < p.n_eos) {
            const int bt = p.eos[tid] - base;
            if (bt >= 0 && bt < MB_ELEMS) stage[bt] = -INFINITY;
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < 4; u++) e[u] = stage[4 * tid + u];
        __syncthreads(); /* tmax below takes the stage's place */
    }
#ifdef GPTC_SAMPLE_PROFILE
    clk[1] = clock64();
#endif

    /* 2., 3. The block's max, min and count, and its top-k bound. */
    float vmax = -INFINITY, vmin = INFINITY;
    int nf = 0;
#pragma unroll
    for (int u = 0; u < 4; u++) {
        vmax = fmaxf(vmax, e[u]);
        if (e[u] > -INFINITY) vmin = fminf(vmin, e[u]), nf++;
    }
    /* The k-th largest of the threads' maxima, by the whole block: a radix
     * select over them (the missing maxima as the block's min, which moves
     * no k-th largest when k are finite), then widened by warp 0. */
    float *tmax = reinterpret_cast<float *>(sh.area);
    tmax[tid] = vmax;
    const int nmax = __syncthreads_count(vmax > -INFINITY);
    block_maxmincount(vmax, vmin, nf, red);
    const bool temp = p.temperature != 1.0f;
    if (tid == 0) ctl.bound = 0;
    if (nmax >= p.top_k) {
        const uint32_t uMp = ukey(vmax);
        if (!(tmax[tid] > -INFINITY)) tmax[tid] = vmin; /* each thread its own entry */
        const uint32_t Dk =
            topk_list_select(tmax, SAMPLE_THREADS, uMp, uMp - ukey(vmin), p.top_k, sh.khist, red, ctl);
        if (tid < 32) {
            const uint32_t D = warp_widen(Dk, uMp, vmin, temp, p.temperature);
            if (tid == 0) ctl.bound = D == 0xffffffffu ? 0u : uMp - D;
        }
    }
    __syncthreads();
    const uint32_t kb = ctl.bound;
    bool f[4];
    uint32_t c = 0;
#pragma unroll
    for (int u = 0; u < 4; u++) f[u] = e[u] > -INFINITY && ukey(e[u]) >= kb, c += f[u];
    uint32_t cnt, at = block_scan(c, red.u, &cnt);
    float o[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
        if (f[u]) {
            if (at < MB_SLOTS) cv[b * MB_SLOTS + at] = e[u], ci[b * MB_SLOTS + at] = i0 + u;
            at++;
        }
        o[u] = f[u] ? e[u] : -INFINITY;
    }
    st4(logits, i0, V, gvec, o);
    if (tid == 0) part[b] = mb_part{vmax, vmin, nf, (int)cnt, kb, {0, 0, 0}};
#ifdef GPTC_SAMPLE_PROFILE
    clk[2] = clock64();
#endif
    __threadfence();
    __syncthreads();
    if (tid == 0) ctl.tok = atomicAdd(&scr->ticket, 1) == G - 1;
    __syncthreads();
    if (!ctl.tok) return;
    __threadfence();
#ifdef GPTC_SAMPLE_PROFILE
    if (tid == 0) {
        clk[3] = clock64();
        for (int k = 0; k < 16; k++) g_sample_prof[k] = k < 4 ? clk[k] : 0;
    }
#endif

    /* The last block: the blocks' parts. */
    if (tid == 0) scr->ticket = 0;
    float mx = -INFINITY, mn = INFINITY;
    int nfin = 0, kq = INT_MIN, over = 0;
    for (int j = tid; j < G; j += SAMPLE_THREADS) {
        const int cj = __ldcg(&part[j].cnt);
        mx = fmaxf(mx, __ldcg(&part[j].vmax)), mn = fminf(mn, __ldcg(&part[j].vmin));
        nfin += __ldcg(&part[j].nfin);
        kq = max(kq, (int)(__ldcg(&part[j].key) ^ 0x80000000u));
        over |= cj > MB_SLOTS;
        sh.wcnt[j] = (uint32_t)cj;
    }
    block_maxmincount(mx, mn, nfin, red);
    block_max2(kq, over, red);
    const uint32_t keyG = (uint32_t)kq ^ 0x80000000u;
    float *ls = reinterpret_cast<float *>(sh.area);
    int *li = reinterpret_cast<int *>(sh.area + LIST_CAP);
    /* Each block's first entry among the candidates, and their total. */
    uint32_t nall, off = block_scan(tid < G ? min(sh.wcnt[tid], (uint32_t)MB_SLOTS) : 0u, red.u, &nall);
    if (tid < G) sh.wcnt[tid] = off;
    __syncthreads();
    int run = 0;
    if (!over && p.top_k < nfin) {
        /* The candidates at or above the raised bound, in index order; the
         * others are dominated: -inf. */
        for (int e0 = 0; e0 < (int)nall; e0 += SAMPLE_THREADS) {
            const int ej = e0 + tid;
            const bool valid = ej < (int)nall;
            int lo = 0, hi = G - 1; /* the last block whose first entry is at or before ej */
            while (lo < hi) {
                const int mid = (lo + hi + 1) >> 1;
                if ((int)sh.wcnt[mid] <= ej) lo = mid;
                else hi = mid - 1;
            }
            const int at_j = lo * MB_SLOTS + ej - (int)sh.wcnt[lo];
            const float v = valid ? __ldcg(cv + at_j) : -INFINITY;
            const int id = valid ? __ldcg(ci + at_j) : 0;
            const bool keep = valid && ukey(v) >= keyG;
            if (valid && !keep) logits[id] = -INFINITY;
            uint32_t tot, a = block_scan((uint32_t)keep, red.u, &tot);
            if (keep && run + (int)a < LIST_CAP) ls[run + a] = v, li[run + a] = id;
            run += (int)tot;
        }
    }
    __syncthreads(); /* the list, before compact_list reads it */
    if (over || !(p.top_k < nfin) || run > LIST_CAP) {
        sample_block<false>(pp, state, logits, V, hist, present, token, token, pos, append, ring, ring_mask, true);
        return;
    }
    PROF(4);
    if (tid == 0 && append) {
        hist[n0] = t;
        if (present) present[t] = 1;
        state->hist_n = n;
    }
    /* The temperature on the list, then top-k there (sample_block's fast path). */
    const float T = p.temperature;
    const float M = temp ? __fdiv_rn(mx, T) : mx, vlo = temp ? __fdiv_rn(mn, T) : mn;
    const uint32_t uM = ukey(M), R = uM - ukey(vlo);
    int ncand = compact_list(ls, li, [=](int j, float) { return j < run; }, temp, T, red);
    int kpend = p.top_k;
    uint32_t Rc = R;
    if (ncand > 64 && p.top_k < ncand) {
        const uint32_t Dk = topk_list_select(ls, ncand, uM, R, p.top_k, sh.khist, red, ctl);
        const int nc = ncand;
        ncand = compact_list(ls, li,
                             [=](int j, float v) {
                                 const bool in = j < nc, keep = in && uM - ukey(v) <= Dk;
                                 if (in && !keep) logits[li[j]] = -INFINITY;
                                 return keep;
                             },
                             false, T, red);
        Rc = min(R, Dk);
        kpend = 0;
    }
    const topp_key key = {uM, Rc, bitlen32((uint32_t)(V - 1)), V};
    const int next = list_tail(ls, li, ncand, kpend, p, M, key, uniform(p.seed, (uint64_t)step), logits,
                               sh.pcnt, sh.pmass, red, ctl);
    PROF(6);
    if (tid == 0) put_token(next, state, step, token, pos, ring, ring_mask);
    PROF(7);
}

__global__ void mark_present_kernel(uint8_t *present, const int32_t *hist, int from, int to) {
    int i = from + blockIdx.x * blockDim.x + threadIdx.x;
    if (i < to) present[hist[i]] = 1;
}

/* Dynamic shared memory that sample_kernel<true> may take on device `dev`
 * (0: keep the scores in global memory), raising its limit the first time. */
size_t sample_smem_limit(int dev) {
    static std::atomic<long long> known[64]; /* bytes + 1; 0: not asked yet */
    if (dev < 0 || dev >= 64) return 0;
    long long k = known[dev].load(std::memory_order_relaxed);
    if (k) return (size_t)(k - 1);
    int optin = 0;
    cudaFuncAttributes fa;
    size_t lim = 0;
    /* Experiments (bench/NOTES-cuda.md, session 13: whether the one-block
     * kernel's shared-memory configuration on its SM slows the products of
     * the next step): GPTC_SAMPLE_SMEM=0 keeps the logits in global memory;
     * GPTC_SAMPLE_CARVEOUT=N has the kernels prefer N% of L1 as shared
     * memory (the one-token products ask for 60 on sm_90). */
    const char *sm_env = getenv("GPTC_SAMPLE_SMEM"), *co_env = getenv("GPTC_SAMPLE_CARVEOUT");
    if (co_env) {
        int co = atoi(co_env);
        (void)cudaFuncSetAttribute(sample_kernel<true>, cudaFuncAttributePreferredSharedMemoryCarveout, co);
        (void)cudaFuncSetAttribute(sample_kernel<false>, cudaFuncAttributePreferredSharedMemoryCarveout, co);
        (void)cudaFuncSetAttribute(sample_rows_kernel<true>, cudaFuncAttributePreferredSharedMemoryCarveout, co);
        (void)cudaFuncSetAttribute(sample_rows_kernel<false>, cudaFuncAttributePreferredSharedMemoryCarveout, co);
        (void)cudaFuncSetAttribute(sample_mb_kernel<true>, cudaFuncAttributePreferredSharedMemoryCarveout, co);
        (void)cudaFuncSetAttribute(sample_mb_kernel<false>, cudaFuncAttributePreferredSharedMemoryCarveout, co);
        (void)cudaGetLastError();
    }
    if ((!sm_env || atoi(sm_env) != 0) &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
        cudaFuncGetAttributes(&fa, sample_kernel<true>) == cudaSuccess &&
        (size_t)optin > fa.sharedSizeBytes) {
        lim = (size_t)optin - fa.sharedSizeBytes;
        /* The kernels run the same block code: the smallest room serves all. */
        for (const void *k : {(const void *)sample_rows_kernel<true>, (const void *)sample_mb_kernel<true>}) {
            cudaFuncAttributes fr;
            if (cudaFuncGetAttributes(&fr, k) != cudaSuccess || (size_t)optin <= fr.sharedSizeBytes)
                lim = 0;
            else if ((size_t)optin - fr.sharedSizeBytes < lim)
                lim = (size_t)optin - fr.sharedSizeBytes;
        }
        for (const void *k : {(const void *)sample_kernel<true>, (const void *)sample_rows_kernel<true>,
                              (const void *)sample_mb_kernel<true>})
            if (lim && cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)lim) != cudaSuccess)
                lim = 0;
    }
    if (!lim) (void)cudaGetLastError(); /* the global-memory kernel serves instead */
    known[dev].store((long long)lim + 1, std::memory_order_relaxed);
    return lim;
}

} // namespace

size_t cuda_sample_scratch_bytes(int V) { return V > 0 && mb_blocks(V) <= MB_GMAX ? mb_bytes(V) : 0; }

cudaError_t cuda_sample(const cuda_sampler *p, cuda_sample_state *state, float *logits, int V,
                        int32_t *hist, uint8_t *present, int32_t *token, int32_t *pos, int append,
                        int32_t *ring, int ring_mask, cudaStream_t st, void *scratch) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    size_t need = (size_t)V * sizeof(float);
    if (scratch && cuda_sample_scratch_bytes(V)) {
        mb_scratch *scr = static_cast<mb_scratch *>(scratch);
        if (need <= sample_smem_limit(dev))
            e = launch_pdl(sample_mb_kernel<true>, dim3(mb_blocks(V)), dim3(SAMPLE_THREADS), need, st, p, state,
                           logits, V, hist, present, token, pos, append, ring, ring_mask, scr);
        else
            e = launch_pdl(sample_mb_kernel<false>, dim3(mb_blocks(V)), dim3(SAMPLE_THREADS), 0, st, p, state,
                           logits, V, hist, present, token, pos, append, ring, ring_mask, scr);
    } else if (need <= sample_smem_limit(dev))
        e = launch_pdl(sample_kernel<true>, dim3(1), dim3(SAMPLE_THREADS), need, st, p, state,
                       logits, V, hist, present, token, pos, append, ring, ring_mask);
    else
        e = launch_pdl(sample_kernel<false>, dim3(1), dim3(SAMPLE_THREADS), 0, st, p, state,
                       logits, V, hist, present, token, pos, append, ring, ring_mask);
    return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t cuda_sample_rows(const cuda_sample_row *rows, int n_rows, float *logits, int V,
                             int32_t *tokens, cudaStream_t st) {
    if (n_rows <= 0) return cudaSuccess;
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    size_t need = (size_t)V * sizeof(float);
    /* With PDL after the argmax, as sample_kernel after the LM head: the
     * rows were uploaded before the pass; the logits and the picks are read
     * and written after sample_block's pdl_wait. */
    if (need <= sample_smem_limit(dev))
        e = launch_pdl(sample_rows_kernel<true>, dim3(n_rows), dim3(SAMPLE_THREADS), need, st, rows, logits, V,
                       tokens);
    else
        e = launch_pdl(sample_rows_kernel<false>, dim3(n_rows), dim3(SAMPLE_THREADS), 0, st, rows, logits, V,
                       tokens);
    return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t cuda_mark_present(uint8_t *present, const int32_t *hist, int from, int to,
                              cudaStream_t st) {
    if (to > from)
        mark_present_kernel<<<(to - from + 255) / 256, 256, 0, st>>>(present, hist, from, to);
    return cudaGetLastError();
}

#ifdef GPTC_SAMPLE_PROFILE
/* clock64() at the stage boundaries of the last step (thread 0). */
void cuda_sample_profile(long long out[16]) { cudaMemcpyFromSymbol(out, g_sample_prof, 16 * sizeof(long long)); }
#endif
