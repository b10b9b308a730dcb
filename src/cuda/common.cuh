/*
 * common.cuh - device helpers shared by the CUDA kernels: conversions between
 * the weight dtypes (fp32, fp16, bf16) and fp32, 8-element vector loads, and
 * warp / block reductions.
 *
 * Every kernel computes in fp32; weights, the K/V cache and the activations
 * that feed a matrix product are stored in the weight dtype T.
 */
#ifndef GPTC_CUDA_COMMON_CUH
#define GPTC_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include <type_traits>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

/* 8 consecutive weights as fp32: one 128-bit load for 16-bit types, two for
 * fp32. p must be 16-byte aligned (rows are padded to 8 elements on upload). */
__device__ __forceinline__ void load8(const float *p, float v[8]) {
    float4 a = __ldg(reinterpret_cast<const float4 *>(p));
    float4 b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
/* 8 16-bit elements held in a 16-byte word, as fp32. */
template <typename T> __device__ __forceinline__ void cvt8(uint4 u, float v[8]);
template <> __device__ __forceinline__ void cvt8<__half>(uint4 u, float v[8]) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __half22float2(h[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
}
template <> __device__ __forceinline__ void cvt8<__nv_bfloat16>(uint4 u, float v[8]) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ void load8(const __half *p, float v[8]) {
    cvt8<__half>(__ldg(reinterpret_cast<const uint4 *>(p)), v);
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float v[8]) {
    cvt8<__nv_bfloat16>(__ldg(reinterpret_cast<const uint4 *>(p)), v);
}

/* 8 consecutive elements kept raw in registers (one 128-bit load for 16-bit
 * types, two for fp32), so that a kernel can issue all its loads before it
 * converts and multiplies any of them. */
template <typename T> struct Vec8;
template <> struct Vec8<float> {
    float4 a, b;
    __device__ __forceinline__ void load(const float *p) {
        a = __ldg(reinterpret_cast<const float4 *>(p));
        b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
    }
    __device__ __forceinline__ float dot(float4 x0, float4 x1) const {
        return x0.x * a.x + x0.y * a.y + x0.z * a.z + x0.w * a.w + x1.x * b.x + x1.y * b.y +
               x1.z * b.z + x1.w * b.w;
    }
};
template <> struct Vec8<__half> {
    uint4 u;
    __device__ __forceinline__ void load(const __half *p) { u = __ldg(reinterpret_cast<const uint4 *>(p)); }
    __device__ __forceinline__ float dot(float4 x0, float4 x1) const {
        const __half2 *h = reinterpret_cast<const __half2 *>(&u);
        float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
        float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
        return x0.x * f0.x + x0.y * f0.y + x0.z * f1.x + x0.w * f1.y + x1.x * f2.x + x1.y * f2.y +
               x1.z * f3.x + x1.w * f3.y;
    }
};
template <> struct Vec8<__nv_bfloat16> {
    uint4 u;
    __device__ __forceinline__ void load(const __nv_bfloat16 *p) {
        u = __ldg(reinterpret_cast<const uint4 *>(p));
    }
    __device__ __forceinline__ float dot(float4 x0, float4 x1) const {
        const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
        float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
        float2 f2 = __bfloat1622float2(h[2]), f3 = __bfloat1622float2(h[3]);
        return x0.x * f0.x + x0.y * f0.y + x0.z * f1.x + x0.w * f1.y + x1.x * f2.x + x1.y * f2.y +
               x1.z * f3.x + x1.w * f3.y;
    }
};

/* Four outputs at o[0..3] (8- or 16-byte aligned) in one store. */
__device__ __forceinline__ void store4(float *o, float a, float b, float c, float d) {
    *reinterpret_cast<float4 *>(o) = make_float4(a, b, c, d);
}
__device__ __forceinline__ void store4(__half *o, float a, float b, float c, float d) {
    __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    uint2 u = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
    *reinterpret_cast<uint2 *>(o) = u;
}
__device__ __forceinline__ void store4(__nv_bfloat16 *o, float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    uint2 u = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
    *reinterpret_cast<uint2 *>(o) = u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum (or with MAX the largest) of v over the block (GROUP 0) or over a
 * group of GROUP threads, returned to every thread of it: each warp's to
 * red[warp] (shared memory, a float a warp) between two barriers of those
 * warps, sync(); the leading one lets consecutive calls share red. */
template <bool MAX, int GROUP, typename Sync>
__device__ __forceinline__ float warps_reduce(float v, float *red, Sync sync) {
    int lane = threadIdx.x & 31, warp = GROUP ? (int)(threadIdx.x % GROUP) >> 5 : (int)(threadIdx.x >> 5);
    int nw = GROUP ? GROUP / 32 : (int)((blockDim.x + 31) >> 5);
    v = MAX ? warp_max(v) : warp_sum(v);
    sync();
    if (lane == 0) red[warp] = v;
    sync();
    float r = lane < nw ? red[lane] : MAX ? -INFINITY : 0.0f;
    return MAX ? warp_max(r) : warp_sum(r);
}
/* Over the block; red is 32 floats. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    return warps_reduce<false, 0>(v, red, [] { __syncthreads(); });
}
__device__ __forceinline__ float block_max(float v, float *red) {
    return warps_reduce<true, 0>(v, red, [] { __syncthreads(); });
}

/* ---- tensor-core and asynchronous-copy primitives (sm_80+) ---- */

/* d += a (16x16, row) . b (16x8, col), fp32 accumulate; T is __half or
 * __nv_bfloat16, the operands packed two to a register. */
template <typename T>
__device__ __forceinline__ void mma16816(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (sizeof(T) == 2 && std::is_same<T, __half>::value)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                     "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

/* 16 bytes global -> shared without a register round trip (src_bytes < 16:
 * the rest zero-filled); cp_async_wait_all waits for this thread's. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;" ::: "memory");
#endif
}

/* Commits this thread's outstanding cp.async as a group and waits until at
 * most N groups are still in flight. */
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
/* Four 8x8 matrices of 16-bit elements from shared memory; lane i gives the
 * address of row i % 8 of matrix i / 8. TRANS: each matrix transposed. */
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned a = (unsigned)__cvta_generic_to_shared(row);
    if constexpr (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}

/*
 * Programmatic dependent launch (Hopper): a kernel launched with
 * launch_pdl may start while the previous kernel in the stream finishes; it
 * must call pdl_wait() before it touches anything an earlier kernel writes
 * or reads (weights, which never change, may be loaded before). pdl_wait
 * returns once the previous grid has completed and its writes are visible;
 * as every kernel waits before it completes, that covers all earlier ones.
 * GPTC_CUDA_NO_PDL=1 launches normally (for comparisons).
 */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* A 16-byte load of parameters (weights) issued before pdl_wait, as a
 * plain global load: ptxas moves read-only (.nc, __ldg) loads freely across
 * griddepcontrol.wait and in gemv_mma_kernel hoisted the wait above all of
 * them (SASS: ACQBULK first), so the weights were requested only after the
 * previous kernel had finished; a plain load stays where it is written.
 * scripts/pdl_check.sh checks every kernel's SASS for it. */
__device__ __forceinline__ uint4 ld_before_wait(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}
int cuda_pdl_enabled(void);
template <typename... KArgs, typename... Args>
static inline cudaError_t launch_pdl(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                     cudaStream_t st, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = cuda_pdl_enabled() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, k, ((KArgs)args)...);
}

/* Thread-block cluster barriers (sm_90; nothing on older targets, where
 * the host never launches clusters): arrive (relaxed: orders nothing;
 * release: this thread's earlier stores), then wait (acquire). */
__device__ __forceinline__ void cluster_arrive_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
/* The address of p in the shared memory of the cluster's block `rank`
 * (sm_90; p itself on older targets, where the host launches no clusters). */
template <typename T> __device__ __forceinline__ T *cluster_map(T *p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint64_t r;
    asm volatile("mapa.u64 %0, %1, %2;" : "=l"(r) : "l"(p), "r"(rank));
    return reinterpret_cast<T *>(r);
#else
    (void)rank;
    return p;
#endif
}
/* Per-device state of the launchers (a kernel's shared-memory limit is set
 * per device): the current device's slot. */
#define CUDA_MAX_DEVICES 64
static inline int cuda_device_slot(void) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= CUDA_MAX_DEVICES) {
        (void)cudaGetLastError();
        return 0;
    }
    return dev;
}
/* The current device's compute capability major (cached per device; 0 when
 * the runtime cannot say, asked again next time): sm_90 launches clusters. */
static inline int cuda_device_major(void) {
    static int major_of[CUDA_MAX_DEVICES];
    int &major = major_of[cuda_device_slot()];
    if (!major) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            major = 0;
        }
    }
    return major;
}

/* Calls F<T>(args...) for the runtime dtype: the launchers' one dispatch. */
#define GPTC_DISPATCH_DTYPE(dt, T, ...)                                                        \
    do {                                                                                       \
        if ((dt) == GPTC_DTYPE_F16) {                                                          \
            typedef __half T;                                                                  \
            __VA_ARGS__;                                                                       \
        } else if ((dt) == GPTC_DTYPE_BF16) {                                                  \
            typedef __nv_bfloat16 T;                                                           \
            __VA_ARGS__;                                                                       \
        } else {                                                                               \
            typedef float T;                                                                   \
            __VA_ARGS__;                                                                       \
        }                                                                                      \
    } while (0)

#endif
