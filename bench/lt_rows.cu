/*
 * lt_rows.cu - does a row of a cuBLASLt product depend on the rows beside it?
 *
 * A batch's prompts are prefilled one cuBLASLt product per prompt, so that
 * each gets the bits a session gives it (src/cuda/paged.cu): enqueueing a
 * prompt's chain costs the host about what the GPU takes to run it. One
 * product over every prompt's rows would do, if a row's sums did not
 * depend on how many rows the product has. This asks, for the products of
 * a GPT-2 layer in prefill (the descriptors of backend.cu's lt_matmul_ex:
 * A = the weights, transposed; fp32 compute; a bias epilogue; the fp16 QKV
 * and FC outputs, the fp32 residual accumulated with beta = 1), whether the
 * first rows of an M-row product are bitwise those of a 16384-row one,
 * with the algorithm the heuristic picks for each M ("heur") and with one
 * algorithm for every M ("pin": the heuristic's answer at PIN rows), and
 * what the pinned algorithm costs at each M against the heuristic's; and
 * whether a prompt's rows placed inside a larger product ("moved") get the
 * bits they get alone, each product's algorithm picked as backend.cu picks
 * it (the heuristic's first that sums over the whole K, or split-K off).
 *
 * usage: lt_rows [PIN]   (default 1024). Prints one line per shape and M.
 */
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));                       \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)
#define CL(x)                                                                                                  \
    do {                                                                                                       \
        cublasStatus_t s_ = (x);                                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                     \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cublasLtGetStatusString(s_));                  \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

#define MMAX 16384
#define WS_BYTES (32u << 20)

typedef struct {
    const char *name;
    int O, I;
    cudaDataType_t ot;
    cublasLtEpilogue_t ep;
    float beta;
} shape;

static cublasLtHandle_t lt;
static void *ws;

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
} descs;

static descs make(const shape *s, int M, const void *bias) {
    descs d;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cudaDataType_t bt = s->ot;
    CL(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CL(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CL(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CL(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &s->ep, sizeof s->ep));
    CL(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    CL(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    CL(cublasLtMatrixLayoutCreate(&d.la, CUDA_R_16F, (uint64_t)s->I, (uint64_t)s->O, s->I));
    CL(cublasLtMatrixLayoutCreate(&d.lb, CUDA_R_16F, (uint64_t)s->I, (uint64_t)M, s->I));
    CL(cublasLtMatrixLayoutCreate(&d.lc, s->ot, (uint64_t)s->O, (uint64_t)M, s->O));
    return d;
}

static void unmake(descs *d) {
    cublasLtMatmulDescDestroy(d->op);
    cublasLtMatrixLayoutDestroy(d->la);
    cublasLtMatrixLayoutDestroy(d->lb);
    cublasLtMatrixLayoutDestroy(d->lc);
}

static int heuristic(const descs *d, cublasLtMatmulAlgo_t *algo) {
    cublasLtMatmulPreference_t pref;
    size_t wsb = WS_BYTES;
    CL(cublasLtMatmulPreferenceCreate(&pref));
    CL(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(lt, d->op, d->la, d->lb, d->lc, d->lc, pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (h != CUBLAS_STATUS_SUCCESS || found < 1 || res.state != CUBLAS_STATUS_SUCCESS) return 0;
    *algo = res.algo;
    return 1;
}

/* As backend.cu's lt_pick_whole_k: the first of 8 answers that sums over the
 * whole K, else the first accepted with its split-K turned off. */
static int whole_k(const cublasLtMatmulAlgo_t *a) {
    uint32_t splitk = 1, red = 0;
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
    return splitk <= 1 && red == 0;
}

static int heuristic_whole(const descs *d, cublasLtMatmulAlgo_t *algo) {
    cublasLtMatmulPreference_t pref;
    size_t wsb = WS_BYTES;
    CL(cublasLtMatmulPreferenceCreate(&pref));
    CL(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    cublasLtMatmulHeuristicResult_t all[8];
    int n = 0, got = 0;
    cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(lt, d->op, d->la, d->lb, d->lc, d->lc, pref, 8, all, &n);
    cublasLtMatmulPreferenceDestroy(pref);
    for (int i = 0; h == CUBLAS_STATUS_SUCCESS && i < n && !got; i++)
        if (all[i].state == CUBLAS_STATUS_SUCCESS && whole_k(&all[i].algo)) *algo = all[i].algo, got = 1;
    for (int i = 0; h == CUBLAS_STATUS_SUCCESS && i < n && !got; i++) {
        cublasLtMatmulAlgo_t a = all[i].algo;
        uint32_t one = 1, none = 0;
        cublasLtMatmulHeuristicResult_t chk;
        if (all[i].state == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one) == 0 &&
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none, sizeof none) == 0 &&
            cublasLtMatmulAlgoCheck(lt, d->op, d->la, d->lb, d->lc, d->lc, &a, &chk) == 0 && whole_k(&a))
            *algo = a, got = 2;
    }
    return got;
}

static void describe(const cublasLtMatmulAlgo_t *a, char *buf, size_t n) {
    int id = -1;
    uint32_t tile = 0, stages = 0, splitk = 0, red = 0, swz = 0, custom = 0;
    uint16_t cluster = 0;
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &custom, sizeof custom, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof cluster, &w);
    snprintf(buf, n, "id %d tile %u stages %u splitk %u red %u swz %u custom %u cluster %u", id, tile, stages,
             splitk, red, swz, custom, cluster);
}

/* out = the product of the first M rows of x (out's first M rows), with algo. */
static int run(const shape *s, int M, const cublasLtMatmulAlgo_t *algo, const void *w, const void *x,
               const void *bias, void *out, size_t out_bytes, const void *init, float *ms) {
    descs d = make(s, M, bias);
    float alpha = 1.0f;
    CK(cudaMemcpy(out, init, out_bytes, cudaMemcpyDeviceToDevice));
    cublasStatus_t st = cublasLtMatmul(lt, d.op, &alpha, w, d.la, x, d.lb, &s->beta, out, d.lc, out, d.lc, algo,
                                       ws, WS_BYTES, 0);
    if (st != CUBLAS_STATUS_SUCCESS) {
        unmake(&d);
        return 0;
    }
    if (ms) {
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        int reps = M >= 4096 ? 10 : 50;
        CK(cudaEventRecord(a));
        for (int r = 0; r < reps; r++)
            CL(cublasLtMatmul(lt, d.op, &alpha, w, d.la, x, d.lb, &s->beta, out, d.lc, out, d.lc, algo, ws,
                              WS_BYTES, 0));
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(ms, a, b));
        *ms /= reps;
        cudaEventDestroy(a);
        cudaEventDestroy(b);
        /* the timed repeats accumulated (beta = 1): the compared result again */
        CK(cudaMemcpy(out, init, out_bytes, cudaMemcpyDeviceToDevice));
        CL(cublasLtMatmul(lt, d.op, &alpha, w, d.la, x, d.lb, &s->beta, out, d.lc, out, d.lc, algo, ws, WS_BYTES,
                          0));
    }
    CK(cudaDeviceSynchronize());
    unmake(&d);
    return 1;
}

static void fill_half(__half *h, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        h[i] = __float2half(((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.5f);
    }
}

int main(int argc, char **argv) {
    int pin_m = argc > 1 ? atoi(argv[1]) : 1024;
    const shape shapes[] = {
        {"gpt2 qkv", 2304, 768, CUDA_R_16F, CUBLASLT_EPILOGUE_BIAS, 0.0f},
        {"gpt2 proj", 768, 768, CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS, 1.0f},
        {"gpt2 fc", 3072, 768, CUDA_R_16F, CUBLASLT_EPILOGUE_GELU_BIAS, 0.0f},
        {"gpt2 mproj", 768, 3072, CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS, 1.0f},
        {"xl qkv", 4800, 1600, CUDA_R_16F, CUBLASLT_EPILOGUE_BIAS, 0.0f},
        {"xl proj", 1600, 1600, CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS, 1.0f},
        {"xl fc", 6400, 1600, CUDA_R_16F, CUBLASLT_EPILOGUE_GELU_BIAS, 0.0f},
        {"xl mproj", 1600, 6400, CUDA_R_32F, CUBLASLT_EPILOGUE_BIAS, 1.0f},
    };
    const int Ms[] = {8, 13, 16, 100, 128, 256, 1000, 1024, 4096, MMAX};
    const int nM = sizeof Ms / sizeof Ms[0];
    CL(cublasLtCreate(&lt));
    CK(cudaMalloc(&ws, WS_BYTES));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("%s, cuBLASLt %zu, pinned algorithm: the heuristic's at M = %d\n", p.name, cublasLtGetVersion(), pin_m);
    int bad_pin = 0, bad_moved = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        size_t osz = s->ot == CUDA_R_32F ? 4 : 2, out_bytes = (size_t)MMAX * s->O * osz;
        size_t nw = (size_t)s->O * s->I, nx = (size_t)MMAX * s->I;
        __half *hw = (__half *)malloc(nw * 2), *hx = (__half *)malloc(nx * 2), *hb = (__half *)malloc(s->O * 4);
        fill_half(hw, nw, 1u + (unsigned)si);
        fill_half(hx, nx, 77u + (unsigned)si);
        void *w, *x, *bias, *out, *init;
        CK(cudaMalloc(&w, nw * 2));
        CK(cudaMalloc(&x, nx * 2));
        CK(cudaMalloc(&bias, (size_t)s->O * osz));
        CK(cudaMalloc(&out, out_bytes));
        CK(cudaMalloc(&init, out_bytes));
        CK(cudaMemcpy(w, hw, nw * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(x, hx, nx * 2, cudaMemcpyHostToDevice));
        if (osz == 4) {
            float *fb = (float *)hb;
            for (int i = 0; i < s->O; i++) fb[i] = __half2float(hw[i]);
            CK(cudaMemcpy(bias, fb, (size_t)s->O * 4, cudaMemcpyHostToDevice));
        } else {
            CK(cudaMemcpy(bias, hw, (size_t)s->O * 2, cudaMemcpyHostToDevice));
        }
        /* the residual the fp32 products accumulate into: the weights' bits as data */
        CK(cudaMemset(init, 0, out_bytes));
        if (s->beta != 0.0f) {
            float *r = (float *)malloc(out_bytes);
            for (size_t i = 0; i < out_bytes / 4; i++) r[i] = __half2float(hx[i % nx]);
            CK(cudaMemcpy(init, r, out_bytes, cudaMemcpyHostToDevice));
            free(r);
        }
        char *hres = (char *)malloc(out_bytes), *href_h = (char *)malloc(out_bytes), *href_p = (char *)malloc(out_bytes);
        cublasLtMatmulAlgo_t pin, a;
        descs dp = make(s, pin_m, bias);
        int have_pin = heuristic(&dp, &pin);
        unmake(&dp);
        char desc[256];
        if (have_pin) describe(&pin, desc, sizeof desc);
        printf("\n%s (O %d, I %d, %s out, beta %g): pinned %s\n", s->name, s->O, s->I, osz == 4 ? "fp32" : "fp16",
               s->beta, have_pin ? desc : "none");
        /* references: MMAX rows, each way */
        descs dm = make(s, MMAX, bias);
        int ok = heuristic(&dm, &a);
        unmake(&dm);
        ok = ok && run(s, MMAX, &a, w, x, bias, out, out_bytes, init, NULL);
        if (ok) CK(cudaMemcpy(href_h, out, out_bytes, cudaMemcpyDeviceToHost));
        int okp = have_pin && run(s, MMAX, &pin, w, x, bias, out, out_bytes, init, NULL);
        if (okp) CK(cudaMemcpy(href_p, out, out_bytes, cudaMemcpyDeviceToHost));
        for (int mi = 0; mi < nM; mi++) {
            int M = Ms[mi];
            size_t rb = (size_t)s->O * osz, nb = (size_t)M * rb;
            float ms_h = -1.0f, ms_p = -1.0f;
            int diff_h = -1, diff_p = -1, diff_hp = -1;
            descs d = make(s, M, bias);
            int okh = heuristic(&d, &a);
            unmake(&d);
            char dh[256] = "none";
            if (okh) describe(&a, dh, sizeof dh);
            if (okh && ok && run(s, M, &a, w, x, bias, out, out_bytes, init, &ms_h)) {
                CK(cudaMemcpy(hres, out, nb, cudaMemcpyDeviceToHost));
                diff_h = 0;
                for (int r = 0; r < M; r++) diff_h += memcmp(hres + r * rb, href_h + r * rb, rb) != 0;
                diff_hp = 0;
                if (okp)
                    for (int r = 0; r < M; r++) diff_hp += memcmp(hres + r * rb, href_p + r * rb, rb) != 0;
            }
            if (okp && run(s, M, &pin, w, x, bias, out, out_bytes, init, &ms_p)) {
                CK(cudaMemcpy(hres, out, nb, cudaMemcpyDeviceToHost));
                diff_p = 0;
                for (int r = 0; r < M; r++) diff_p += memcmp(hres + r * rb, href_p + r * rb, rb) != 0;
                bad_pin += diff_p != 0;
            }
            printf("  M %5d: heur %8.4f ms, rows != heur@%d: %5d (!= pin@%d: %5d) [%s]; pin %8.4f ms, rows != "
                   "pin@%d: %5d\n",
                   M, ms_h, MMAX, diff_h, MMAX, diff_hp, dh, ms_p, MMAX, diff_p);
        }
        /* Moved rows: a prompt's M rows at row `at` of a product of `big`
         * rows (the batch's one product) against the M rows alone, from an
         * output zeroed first (beta 1: accumulated into zeros). */
        static const int moved[][3] = {{29, 65, 805}, {32, 97, 805}, {14, 3, 805}, {150, 300, 805}, {128, 128, 4096}};
        for (size_t k = 0; k < sizeof moved / sizeof moved[0]; k++) {
            int M = moved[k][0], at = moved[k][1], big = moved[k][2];
            size_t rb = (size_t)s->O * osz, ib = (size_t)s->I * 2;
            void *x2, *zero;
            CK(cudaMalloc(&x2, (size_t)big * ib));
            CK(cudaMalloc(&zero, out_bytes));
            CK(cudaMemset(zero, 0, out_bytes));
            /* rows [0, at) and [at + M, big) from elsewhere in x, [at, at + M) = x's first M */
            CK(cudaMemcpy(x2, (char *)x + (size_t)M * ib, (size_t)at * ib, cudaMemcpyDeviceToDevice));
            CK(cudaMemcpy((char *)x2 + (size_t)at * ib, x, (size_t)M * ib, cudaMemcpyDeviceToDevice));
            CK(cudaMemcpy((char *)x2 + (size_t)(at + M) * ib, (char *)x + (size_t)(at + M) * ib,
                          (size_t)(big - at - M) * ib, cudaMemcpyDeviceToDevice));
            int diff = -1;
            descs d1 = make(s, M, bias), d2 = make(s, big, bias);
            cublasLtMatmulAlgo_t a1, a2;
            int ok1 = heuristic_whole(&d1, &a1), ok2 = heuristic_whole(&d2, &a2);
            unmake(&d1), unmake(&d2);
            char s1[256] = "none", s2[256] = "none";
            if (ok1) describe(&a1, s1, sizeof s1);
            if (ok2) describe(&a2, s2, sizeof s2);
            if (ok1 && ok2 && run(s, M, &a1, w, x, bias, out, out_bytes, zero, NULL)) {
                CK(cudaMemcpy(hres, out, (size_t)M * rb, cudaMemcpyDeviceToHost));
                if (run(s, big, &a2, w, x2, bias, out, out_bytes, zero, NULL)) {
                    CK(cudaMemcpy(href_h, (char *)out + (size_t)at * rb, (size_t)M * rb, cudaMemcpyDeviceToHost));
                    diff = 0;
                    for (int r = 0; r < M; r++) diff += memcmp(hres + r * rb, href_h + r * rb, rb) != 0;
                }
            }
            printf("  moved: %d rows alone [%s%s] vs at row %d of %d [%s%s]: %d rows differ\n", M, s1,
                   ok1 == 2 ? ", split-K turned off" : "", at, big, s2, ok2 == 2 ? ", split-K turned off" : "", diff);
            bad_moved += diff != 0;
            cudaFree(x2), cudaFree(zero);
        }
        free(hw), free(hx), free(hb), free(hres), free(href_h), free(href_p);
        cudaFree(w), cudaFree(x), cudaFree(bias), cudaFree(out), cudaFree(init);
    }
    printf("\npinned algorithm: %d (shape, M) cases with rows unlike the %d-row product's\n", bad_pin, MMAX);
    printf("moved rows: %d cases where a product's rows differ from those rows alone\n", bad_moved);
    return 0;
}
