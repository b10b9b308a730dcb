/*
 * launch_floor: what a chain of dependent kernels costs on this card, apart
 * from any model. A gpt2 decode step is ~64 kernels, each depending on the
 * one before; issue 3's target (0.15 ms/token) leaves ~2.3 us a kernel. This
 * measures the pieces of that budget:
 *
 *   empty      graph of N kernels that do nothing (PDL on / off)
 *   chain      graph of N kernels shaped like a decode GEMV: each block loads
 *              its slice of a weight buffer before the PDL wait, then reads
 *              the whole input row the previous kernel wrote, reduces it,
 *              and writes its part of the next row
 *   coop       the same phases in one cooperative kernel with a grid
 *              barrier between them
 *   persist    the same phases in one cooperative kernel with a split-phase
 *              flag barrier: a block arrives (fence, atomic add on the
 *              phase's counter) right after its share of the row is
 *              written, loads the next phase's weights, and only then waits
 *              for the counter to reach the grid - what a whole-step kernel
 *              would pay a phase in place of a kernel boundary
 *   cluster    cluster barriers (8 blocks) inside one kernel
 *   host       a step graph launched and its 4-byte result copied back and
 *              waited for, per step (what gptc's decode loop does), against
 *              the same graphs launched back to back
 *   read       one kernel streaming a buffer of a decode product's weight
 *              bytes (gpt2's and gpt2-xl's matrices, fp16) from DRAM: the
 *              best a product of that size can do, by grid size and loads
 *              in flight a thread (buffers rotate over more than L2 holds)
 *
 * Built with the CUDA backend (build/launch_floor; sm_90 only).
 * Usage: launch_floor [N kernels, default 64] [blocks, default: SMs]
 * Prints one line per case: microseconds per kernel (or per barrier).
 */
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

namespace cg = cooperative_groups;

#define CK(x)                                                                                 \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "launch_floor: %s: %s\n", #x, cudaGetErrorString(e_));            \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

#define THREADS 256
#define ROW 768        /* the input row: gpt2's n_embd */
#define WCHUNKS 8      /* 16-byte weight chunks a thread loads before the wait */

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

__global__ void empty_kernel(int pdl) {
    if (pdl) {
        pdl_wait();
        pdl_trigger();
    }
}

__device__ float block_sum(float v) {
    __shared__ float red[THREADS / 32];
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0;
    for (int i = 0; i < THREADS / 32; i++) s += red[i];
    __syncthreads();
    return s;
}

/* A phase after its weights are in registers: the dependent input row
 * (CG: through L2, for a row another block of the same kernel wrote), a
 * block-wide reduction (a layer norm has two), and this block's share of
 * the output row. */
template <bool CG>
__device__ void phase_rest(const uint4 (&wr)[WCHUNKS], const float *in, float *out, int blk, int nblk) {
    float v = 0;
    for (int i = threadIdx.x; i < ROW; i += THREADS) v += CG ? __ldcg(in + i) : in[i];
    float s = block_sum(v);
    float acc = 0;
#pragma unroll
    for (int i = 0; i < WCHUNKS; i++) acc += __uint_as_float(wr[i].x & 0x3f800000u);
    acc = block_sum(acc);
    for (int i = blk * 32 + threadIdx.x; i < ROW && threadIdx.x < 32; i += nblk * 32)
        out[i] = s * 1e-3f + acc * 1e-6f;
}

/* One phase of the chain: weights first (they never change), then the
 * rest. */
__device__ void phase(const uint4 *w, size_t wn, const float *in, float *out, int blk, int nblk,
                      bool wait) {
    uint4 wr[WCHUNKS];
    size_t base = ((size_t)blk * THREADS + threadIdx.x) * WCHUNKS;
#pragma unroll
    for (int i = 0; i < WCHUNKS; i++) wr[i] = w[(base + i) % wn];
    if (wait) {
        pdl_wait();
        pdl_trigger();
    }
    phase_rest<false>(wr, in, out, blk, nblk);
}

__global__ void __launch_bounds__(THREADS) chain_kernel(const uint4 *w, size_t wn, const float *in,
                                                        float *out) {
    phase(w, wn, in, out, blockIdx.x, gridDim.x, true);
}

__global__ void __launch_bounds__(THREADS) coop_kernel(const uint4 *w, size_t wn, float *rows, int n) {
    cg::grid_group g = cg::this_grid();
    for (int k = 0; k < n; k++) {
        phase(w, wn, rows + (size_t)(k & 1) * ROW, rows + (size_t)((k + 1) & 1) * ROW, blockIdx.x,
              gridDim.x, false);
        g.sync();
    }
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* count: n counters, zero at launch. Phase k reads rows[k & 1] and writes
 * rows[(k + 1) & 1]: a block may start phase k + 1 only once every block has
 * arrived from phase k (read its input and written its share). */
__global__ void __launch_bounds__(THREADS) persist_kernel(const uint4 *w, size_t wn, float *rows, int n,
                                                          unsigned *count) {
    int blk = blockIdx.x, nblk = gridDim.x;
    uint4 wr[WCHUNKS];
    size_t base = ((size_t)blk * THREADS + threadIdx.x) * WCHUNKS;
#pragma unroll
    for (int i = 0; i < WCHUNKS; i++) wr[i] = w[(base + i) % wn];
    for (int k = 0; k < n; k++) {
        if (k > 0) {
            if (threadIdx.x == 0)
                while (ld_acquire(count + k - 1) < (unsigned)nblk) {
                }
            __syncthreads();
        }
        phase_rest<true>(wr, rows + (size_t)(k & 1) * ROW, rows + (size_t)((k + 1) & 1) * ROW, blk, nblk);
        __syncthreads();
        if (threadIdx.x == 0) {
            __threadfence();
            atomicAdd(count + k, 1u);
        }
        /* the next phase's weights (they never change) while the others finish */
        size_t nb = (base + (size_t)(k + 1) * nblk * THREADS * WCHUNKS) % wn;
#pragma unroll
        for (int i = 0; i < WCHUNKS; i++) wr[i] = w[(nb + i) % wn];
    }
}

__global__ void __cluster_dims__(8, 1, 1) cluster_kernel(int n, float *sink) {
    cg::cluster_group c = cg::this_cluster();
    float v = threadIdx.x;
    for (int k = 0; k < n; k++) {
        v = v * 1.0001f + 1.0f;
        c.sync();
    }
    if (v == -1.0f) *sink = v;
}

__global__ void one_kernel(int *out) { *out += 1; }

static float time_graph(cudaGraphExec_t g, cudaStream_t s, int reps);

/* Streams n 16-byte words: a block reads U x 4 KB contiguous a round, all
 * U loads in flight before any is used. */
template <int U>
__global__ void __launch_bounds__(THREADS) read_kernel(const uint4 *p, size_t n, unsigned *sink) {
    unsigned acc = 0;
    size_t stride = (size_t)gridDim.x * THREADS * U;
    for (size_t base = (size_t)blockIdx.x * THREADS * U + threadIdx.x; base < n; base += stride) {
        uint4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            size_t i = base + (size_t)u * THREADS;
            v[u] = i < n ? __ldg(p + i) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x9e3779b9u) *sink = acc;
}

/* Microseconds per read of `bytes`, kernels back to back in a graph, each
 * on the next of the copies that fill `arena`. */
static float time_read(int U, int blocks, const char *arena, size_t arena_bytes, size_t bytes, unsigned *sink,
                       cudaStream_t s) {
    int copies = (int)(arena_bytes / bytes), reps = 100;
    size_t n = bytes / 16;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int k = 0; k < reps; k++) {
        const uint4 *p = (const uint4 *)(arena + (size_t)(k % copies) * bytes);
        if (U == 4) read_kernel<4><<<blocks, THREADS, 0, s>>>(p, n, sink);
        else if (U == 8) read_kernel<8><<<blocks, THREADS, 0, s>>>(p, n, sink);
        else read_kernel<16><<<blocks, THREADS, 0, s>>>(p, n, sink);
    }
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    float ms = time_graph(ge, s, 3);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return ms * 1e3f / reps;
}

/* A launch of `blocks` blocks on s, with programmatic dependent launch
 * allowed when pdl (cfg keeps a pointer to at). */
static cudaLaunchConfig_t config(int blocks, bool pdl, cudaStream_t s, cudaLaunchAttribute *at) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(THREADS);
    cfg.stream = s;
    at->id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at->val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = pdl ? 1 : 0;
    return cfg;
}

static cudaError_t launch(void (*k)(const uint4 *, size_t, const float *, float *), int blocks,
                          bool pdl, cudaStream_t s, const uint4 *w, size_t wn, const float *in,
                          float *out) {
    cudaLaunchAttribute at;
    cudaLaunchConfig_t cfg = config(blocks, pdl, s, &at);
    return cudaLaunchKernelEx(&cfg, k, w, wn, in, out);
}

static cudaError_t launch_empty(int blocks, bool pdl, cudaStream_t s) {
    cudaLaunchAttribute at;
    cudaLaunchConfig_t cfg = config(blocks, pdl, s, &at);
    return cudaLaunchKernelEx(&cfg, empty_kernel, (int)pdl);
}

/* Milliseconds per replay of graph g (median-free: the mean of reps after a
 * warm-up, which is what a decode loop sees). */
static float time_graph(cudaGraphExec_t g, cudaStream_t s, int reps) {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 5; i++) CK(cudaGraphLaunch(g, s));
    CK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; i++) CK(cudaGraphLaunch(g, s));
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return ms / reps;
}

int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 64;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int blocks = argc > 2 ? atoi(argv[2]) : prop.multiProcessorCount;
    if (N < 1 || N > 4096 || blocks < 1 || blocks > 65535) {
        fprintf(stderr, "launch_floor: usage: launch_floor [N 1..4096] [blocks 1..65535]\n");
        return 2;
    }
    printf("%s, %d SMs; %d kernels, %d blocks of %d threads\n", prop.name, prop.multiProcessorCount,
           N, blocks, THREADS);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    /* 3.5 MB of "weights" (gpt2's QKV matrix), read in slices per kernel. */
    size_t wn = (size_t)3538944 / 16;
    uint4 *w;
    float *rows;
    int *d_one, *h_one;
    CK(cudaMalloc(&w, wn * 16));
    CK(cudaMemset(w, 0, wn * 16));
    CK(cudaMalloc(&rows, 2 * ROW * sizeof(float)));
    CK(cudaMemset(rows, 0, 2 * ROW * sizeof(float)));
    CK(cudaMalloc(&d_one, sizeof(int)));
    CK(cudaMallocHost(&h_one, sizeof(int)));

    for (int pdl = 0; pdl < 2; pdl++) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        for (int k = 0; k < N; k++) CK(launch_empty(blocks, pdl, s));
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        float ms = time_graph(ge, s, 200);
        printf("empty   pdl=%d  %7.3f us per kernel  (graph %7.1f us)\n", pdl, ms * 1e3f / N, ms * 1e3f);
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(g));
    }
    cudaGraphExec_t chain_exec[2];
    for (int pdl = 0; pdl < 2; pdl++) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        for (int k = 0; k < N; k++)
            CK(launch(chain_kernel, blocks, pdl, s, w + ((size_t)(k % 8) * blocks * THREADS * WCHUNKS) % (wn / 2),
                      wn / 2, rows + (size_t)(k & 1) * ROW, rows + (size_t)((k + 1) & 1) * ROW));
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&chain_exec[pdl], g, 0));
        CK(cudaGraphDestroy(g));
        float ms = time_graph(chain_exec[pdl], s, 200);
        printf("chain   pdl=%d  %7.3f us per kernel  (graph %7.1f us)\n", pdl, ms * 1e3f / N, ms * 1e3f);
    }
    {
        int nb = 0;
        CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, coop_kernel, THREADS, 0));
        int cb = prop.multiProcessorCount * (nb < 1 ? 1 : nb);
        if (cb > blocks) cb = blocks;
        void *args[] = {&w, &wn, &rows, &N};
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        CK(cudaLaunchCooperativeKernel((void *)coop_kernel, dim3(cb), dim3(THREADS), args, 0, s));
        CK(cudaEventRecord(a, s));
        for (int r = 0; r < 50; r++)
            CK(cudaLaunchCooperativeKernel((void *)coop_kernel, dim3(cb), dim3(THREADS), args, 0, s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        printf("coop           %7.3f us per phase   (%d blocks)\n", ms / 50 * 1e3f / N, cb);
        /* The split-phase flag barrier, one block an SM (co-resident:
         * a cooperative launch); the counters zeroed before each launch. */
        unsigned *count;
        CK(cudaMalloc(&count, (size_t)N * sizeof(unsigned)));
        int pb = prop.multiProcessorCount < blocks ? prop.multiProcessorCount : blocks;
        void *pargs[] = {&w, &wn, &rows, &N, &count};
        CK(cudaMemsetAsync(count, 0, (size_t)N * sizeof(unsigned), s));
        CK(cudaLaunchCooperativeKernel((void *)persist_kernel, dim3(pb), dim3(THREADS), pargs, 0, s));
        float pms = 0;
        for (int r = 0; r < 50; r++) {
            CK(cudaMemsetAsync(count, 0, (size_t)N * sizeof(unsigned), s));
            CK(cudaEventRecord(a, s));
            CK(cudaLaunchCooperativeKernel((void *)persist_kernel, dim3(pb), dim3(THREADS), pargs, 0, s));
            CK(cudaEventRecord(b, s));
            CK(cudaEventSynchronize(b));
            float t;
            CK(cudaEventElapsedTime(&t, a, b));
            pms += t;
        }
        printf("persist        %7.3f us per phase   (%d blocks; flag barrier, next weights before the wait)\n",
               pms / 50 * 1e3f / N, pb);
        CK(cudaFree(count));
    }
    {
        int nc = 1000;
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        int cblocks = blocks < 8 ? 8 : blocks / 8 * 8;
        cluster_kernel<<<cblocks, THREADS, 0, s>>>(10, rows);
        CK(cudaGetLastError());
        CK(cudaEventRecord(a, s));
        cluster_kernel<<<cblocks, THREADS, 0, s>>>(nc, rows);
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        printf("cluster        %7.3f us per cluster barrier (8 blocks)\n", ms * 1e3f / nc);
    }
    /* The decode loop's round trip: launch the step, copy its token, wait. */
    {
        int reps = 200;
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        float back = time_graph(chain_exec[1], s, reps);
        cudaGraph_t g1;
        cudaGraphExec_t e1;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        one_kernel<<<1, 1, 0, s>>>(d_one);
        CK(cudaStreamEndCapture(s, &g1));
        CK(cudaGraphInstantiate(&e1, g1, 0));
        CK(cudaEventRecord(a, s));
        for (int i = 0; i < reps; i++) {
            CK(cudaGraphLaunch(chain_exec[1], s));
            CK(cudaGraphLaunch(e1, s));
            CK(cudaMemcpyAsync(h_one, d_one, sizeof(int), cudaMemcpyDeviceToHost, s));
            CK(cudaStreamSynchronize(s));
        }
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        printf("host    step graph back to back %7.1f us, launched + copied + waited per step %7.1f us "
               "(round trip %5.1f us)\n",
               back * 1e3f, ms / reps * 1e3f, (ms / reps - back) * 1e3f);
    }
    /* A product's weights streamed from DRAM: 160 MB of rotating copies,
     * past the L2 of any card this runs on. */
    {
        const size_t arena_bytes = (size_t)160 << 20;
        const struct {
            const char *what;
            size_t bytes;
        } sizes[] = {{"gpt2 proj", 768u * 768 * 2},    {"gpt2 qkv", 768u * 2304 * 2},
                     {"gpt2 fc", 768u * 3072 * 2},     {"xl proj", 1600u * 1600 * 2},
                     {"xl qkv", 1600u * 4800 * 2},     {"xl fc", 1600u * 6400 * 2}};
        char *arena;
        unsigned *sink;
        CK(cudaMalloc(&arena, arena_bytes));
        CK(cudaMemset(arena, 1, arena_bytes));
        CK(cudaMalloc(&sink, sizeof(unsigned)));
        int sms = prop.multiProcessorCount, mult[] = {1, 2, 4, 8}, us[] = {4, 8, 16};
        printf("read    us (GB/s) for one kernel streaming the bytes; columns: blocks x loads a thread\n");
        printf("%-10s %8s", "", "MB");
        for (int b = 0; b < 4; b++)
            for (int u = 0; u < 3; u++) {
                char h[32];
                snprintf(h, sizeof h, "%dx%d", mult[b] * sms, us[u]);
                printf(" %15s", h);
            }
        printf("\n");
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            printf("%-10s %8.2f", sizes[k].what, sizes[k].bytes / 1e6);
            for (int b = 0; b < 4; b++)
                for (int u = 0; u < 3; u++) {
                    float t = time_read(us[u], mult[b] * sms, arena, arena_bytes, sizes[k].bytes, sink, s);
                    char c[32];
                    snprintf(c, sizeof c, "%.1f (%.0f)", t, sizes[k].bytes / (t * 1e3));
                    printf(" %15s", c);
                }
            printf("\n");
        }
        CK(cudaFree(arena));
        CK(cudaFree(sink));
    }
    return 0;
}
