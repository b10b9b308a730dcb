/*
 * norm.cu - the embedding, layer norm and small utility kernels.
 *
 * Memory-bound one-pass kernels over (T, C) rows, one block (for the layer
 * norm of the usual widths, one warp) per row. The
 * layer norm takes the mean and then the biased variance in two passes over
 * the row, like the CPU reference, rather than E[x^2] - E[x]^2, which loses
 * precision when the mean is large.
 */
#include <stdlib.h>

#include "common.cuh"
#include "kernels.cuh"

#define ROW_THREADS 256

/* each: token t is at pos[t] (a pass of the paged cache), else at *pos + t. */
template <typename T>
__global__ void embed_kernel(float *x, const T *wte, int ldw, const float *wpe, const int32_t *ids,
                             const int32_t *pos, int each, int C) {
    int t = blockIdx.x;
    const T *te = wte + (size_t)ids[t] * ldw;
    const float *pe = wpe + (size_t)(each ? pos[t] : *pos + t) * C;
    float *xr = x + (size_t)t * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) xr[i] = to_f(te[i]) + pe[i];
}

/* The embedding of a batch pass launched ahead (paged.cu): row t's token
 * is the pick of the pass before (picks, mapped host memory), its position
 * one on; thread 0 writes both and the cache row back for the kernels after
 * (which read them after their pdl_wait: this is a plain launch, complete
 * before they pass it). */
template <typename T>
__global__ void embed_advance_kernel(float *x, const T *wte, int ldw, const float *wpe, int32_t *ids,
                                     int32_t *pos, int32_t *crow, const int32_t *tab, const int32_t *tables,
                                     int bs, const int32_t *picks, int C) {
    __shared__ int s_id, s_pos;
    int t = blockIdx.x;
    if (threadIdx.x == 0) {
        int q = pos[t] + 1, id = picks[t];
        ids[t] = id;
        pos[t] = q;
        crow[t] = tables[tab[t] + q / bs] * bs + q % bs;
        s_id = id, s_pos = q;
    }
    __syncthreads();
    const T *te = wte + (size_t)s_id * ldw;
    const float *pe = wpe + (size_t)s_pos * C;
    float *xr = x + (size_t)t * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) xr[i] = to_f(te[i]) + pe[i];
}

cudaError_t cuda_embed_advance(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe, int32_t *ids,
                               int32_t *pos, int32_t *crow, const int32_t *tab, const int32_t *tables, int bs,
                               const int32_t *picks, int T, int C, cudaStream_t st) {
    GPTC_DISPATCH_DTYPE(dt, W,
                        embed_advance_kernel<W><<<T, ROW_THREADS, 0, st>>>(x, (const W *)wte, ldw, wpe, ids, pos,
                                                                            crow, tab, tables, bs, picks, C));
    return cudaGetLastError();
}

cudaError_t cuda_embed(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe,
                       const int32_t *ids, const int32_t *pos, int T, int C, cudaStream_t st) {
    GPTC_DISPATCH_DTYPE(dt, W,
                        embed_kernel<W><<<T, ROW_THREADS, 0, st>>>(x, (const W *)wte, ldw, wpe,
                                                                    ids, pos, 0, C));
    return cudaGetLastError();
}

cudaError_t cuda_embed_at(gptc_dtype dt, float *x, const void *wte, int ldw, const float *wpe,
                          const int32_t *ids, const int32_t *pos, int T, int C, cudaStream_t st) {
    GPTC_DISPATCH_DTYPE(dt, W,
                        embed_kernel<W><<<T, ROW_THREADS, 0, st>>>(x, (const W *)wte, ldw, wpe,
                                                                    ids, pos, 1, C));
    return cudaGetLastError();
}

/* Output row blockIdx.x from input row rows[blockIdx.x], or the same row
 * when rows is NULL. */
template <typename T>
__global__ void layernorm_kernel(T *out, const float *x, const int32_t *rows, const float *w,
                                 const float *b, int C, float eps) {
    __shared__ float red[32];
    pdl_wait();
    pdl_trigger();
    const float *xr = x + (size_t)(rows ? rows[blockIdx.x] : (int32_t)blockIdx.x) * C;
    T *o = out + (size_t)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, red) / (float)C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = xr[i] - mean;
        v += d * d;
    }
    float var = block_sum(v, red) / (float)C;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        o[i] = from_f<T>((xr[i] - mean) * rstd * w[i] + b[i]);
}

#define LN_WARPS 4
/*
 * The usual shapes (C a multiple of 4, at most 128 * NV): a warp per row,
 * the row held in registers (NV float4 per lane, all loads issued at once),
 * warp-shuffle sums and no block barrier. A prompt's layer norms were ~8 us
 * each as block-per-row kernels for a 3 MB read; the statistics are the
 * same (mean, then biased variance), summed in another order.
 */
template <typename T, int NV>
__global__ void __launch_bounds__(LN_WARPS * 32)
    layernorm_warp_kernel(T *out, const float *x, const int32_t *rows, const float *w, const float *b,
                          int n, int C, float eps) {
    int r = blockIdx.x * LN_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31, C4 = C >> 2;
    pdl_wait();
    pdl_trigger();
    if (r >= n) return;
    const float4 *xr = reinterpret_cast<const float4 *>(x + (size_t)(rows ? rows[r] : r) * C);
    float4 v[NV];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int i = lane + k * 32;
        v[k] = i < C4 ? xr[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        s += (v[k].x + v[k].y) + (v[k].z + v[k].w);
    }
    float mean = warp_sum(s) / (float)C, q = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++)
        if (lane + k * 32 < C4) {
            float a = v[k].x - mean, bb = v[k].y - mean, c = v[k].z - mean, d = v[k].w - mean;
            q += (a * a + bb * bb) + (c * c + d * d);
        }
    float rstd = 1.0f / sqrtf(warp_sum(q) / (float)C + eps);
    T *o = out + (size_t)r * C;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int i = lane + k * 32;
        if (i >= C4) continue;
        float4 w4 = reinterpret_cast<const float4 *>(w)[i], b4 = reinterpret_cast<const float4 *>(b)[i];
        store4(o + 4 * i, (v[k].x - mean) * rstd * w4.x + b4.x, (v[k].y - mean) * rstd * w4.y + b4.y,
               (v[k].z - mean) * rstd * w4.z + b4.z, (v[k].w - mean) * rstd * w4.w + b4.w);
    }
}

static cudaError_t layernorm_any(gptc_dtype dt, void *out, const float *x, const int32_t *rows,
                                 const float *w, const float *b, int n, int C, float eps,
                                 cudaStream_t st) {
    unsigned blocks = (unsigned)((n + LN_WARPS - 1) / LN_WARPS);
    cudaError_t err;
    if (C % 4 == 0 && C <= 32 * 4 * 8)
        GPTC_DISPATCH_DTYPE(dt, W,
                            err = launch_pdl(layernorm_warp_kernel<W, 8>, dim3(blocks), dim3(LN_WARPS * 32),
                                             0, st, (W *)out, x, rows, w, b, n, C, eps));
    else if (C % 4 == 0 && C <= 32 * 4 * 16)
        GPTC_DISPATCH_DTYPE(dt, W,
                            err = launch_pdl(layernorm_warp_kernel<W, 16>, dim3(blocks), dim3(LN_WARPS * 32),
                                             0, st, (W *)out, x, rows, w, b, n, C, eps));
    else
        GPTC_DISPATCH_DTYPE(dt, W,
                            err = launch_pdl(layernorm_kernel<W>, dim3((unsigned)n), dim3(ROW_THREADS), 0,
                                             st, (W *)out, x, rows, w, b, C, eps));
    return err != cudaSuccess ? err : cudaGetLastError();
}

cudaError_t cuda_layernorm(gptc_dtype dt, void *out, const float *x, const float *w,
                           const float *b, int T, int C, float eps, cudaStream_t st) {
    return layernorm_any(dt, out, x, NULL, w, b, T, C, eps, st);
}

cudaError_t cuda_layernorm_rows(gptc_dtype dt, void *out, const float *x, const int32_t *rows,
                                const float *w, const float *b, int n, int C, float eps,
                                cudaStream_t st) {
    return layernorm_any(dt, out, x, rows, w, b, n, C, eps, st);
}

int cuda_pdl_enabled(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("GPTC_CUDA_NO_PDL");
        on = !(e && *e && *e != '0');
    }
    return on;
}

__global__ void set_int_kernel(int32_t *p, int32_t v) { *p = v; }

cudaError_t cuda_set_int(int32_t *p, int32_t v, cudaStream_t st) {
    set_int_kernel<<<1, 1, 0, st>>>(p, v);
    return cudaGetLastError();
}

template <typename T> __global__ void convert_kernel(T *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_f<T>(src[i]);
}

cudaError_t cuda_convert(gptc_dtype dt, void *dst, const float *src, size_t n, cudaStream_t st) {
    size_t blocks = (n + 255) / 256;
    unsigned grid = (unsigned)(blocks < 65535 ? (blocks ? blocks : 1) : 65535);
    GPTC_DISPATCH_DTYPE(dt, W, convert_kernel<W><<<grid, 256, 0, st>>>((W *)dst, src, n));
    return cudaGetLastError();
}
