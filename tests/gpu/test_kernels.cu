/*
 * test_kernels.cu - every kernel launcher of src/cuda/kernels.cuh against a
 * float64 host reference, for each weight dtype, on seeded random inputs at
 * odd sizes. Needs a GPU. Not covered here: the sampler (sample.cu) and the
 * persistent decode kernel (decode.cu). Attention is also run through block
 * tables (the paged cache), and the GEMV and attention through those are
 * compared bitwise with the plain launches (batch invariance).
 *
 * What a kernel reads in the weight dtype is rounded on the host first and
 * the reference computes from those rounded values, so the error measured
 * is the kernel's own: fp32 arithmetic, and the rounding of what it stores
 * in the dtype (at most u |x|, u = 2^-11 for fp16, 2^-8 for bf16). Errors
 * are max|got - ref| / max|ref| over the compared tensor, printed beside
 * their bound:
 *   - fp32 results: one fp32 operation (embedding, epilogue kernel) 1e-6;
 *     products, layer norm and attention 1e-5 (fp32 accumulation of up to
 *     20000 terms, measured at most 1e-6);
 *   - results stored in the dtype: that plus 2u, twice the worst rounding;
 *   - activations: the product's absolute bound carried through the
 *     activation (its largest change over that interval) plus 2u, plus
 *     2e-6 for the fp32 tanhf, erff, expf;
 *   - gemv_ln rounds its layer norm to the dtype before the product, and so
 *     does the reference; an element whose fp32 norm lies so near a rounding
 *     midpoint that it may round either way adds one ulp times |w| to the
 *     bound of each output;
 *   - attention on tensor cores (the "mma" path, fp16 and bf16) also rounds
 *     q * scale and the probabilities to the dtype before their products: 6u (u for the
 *     output, u for P, 4u for q's rounding carried through the softmax at
 *     scores of a few units; measured up to 1.3u).
 * Conversions, argmax, set_int, the scratch tickets and the bytes a kernel
 * must leave alone (padding columns, cache rows outside the pass, all
 * pre-filled with NaN) are compared exactly. NaN also fills the K/V cache
 * rows past the pass and the k/v thirds of qkv, so that attention reading
 * anything outside its causal window shows up as a NaN output.
 *
 * Usage: test_kernels [--seed N] [--quick]. Without --seed each run draws a
 * new seed (printed first and last). Each case reseeds from the seed and its
 * own name, so a failing case replays under the same seed, also in the
 * --quick subset (for compute-sanitizer) when it is part of it. One line per
 * case; exit status 1 on any failure.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.cuh"

static cudaStream_t g_st;
static uint64_t g_seed, g_rng;
static int g_quick, g_cases, g_failed;
static size_t g_smem_optin; /* the device's largest dynamic shared memory per block */

/* ---- plumbing ---- */

/* A CUDA error leaves nothing to compare (and may poison the context): stop. */
#define CK(x) ck((x), #x, __FILE__, __LINE__)
static void ck(cudaError_t e, const char *what, const char *file, int line) {
    if (e == cudaSuccess) return;
    printf("FAIL %s:%d: %s: %s\n", file, line, what, cudaGetErrorString(e));
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("FAIL out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}
static void *xcalloc(size_t n, size_t es) {
    void *p = calloc(n ? n : 1, es);
    if (!p) {
        printf("FAIL out of host memory (%zu x %zu bytes)\n", n, es);
        exit(1);
    }
    return p;
}
static void *dalloc(size_t n) {
    void *p;
    CK(cudaMalloc(&p, n ? n : 1));
    return p;
}
static void *dupload(const void *h, size_t n) {
    void *p = dalloc(n);
    CK(cudaMemcpy(p, h, n, cudaMemcpyHostToDevice));
    return p;
}
static void download(void *h, const void *d, size_t n) {
    CK(cudaStreamSynchronize(g_st));
    CK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}

/* splitmix64: each case seeds it from the run's seed and the case's name. */
static uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float uni(double a, double b) { return (float)(a + (b - a) * (double)(rnd64() >> 11) * 0x1.0p-53); }
static void reseed(const char *name) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    g_rng = h ^ g_seed;
}

/* ---- dtypes ---- */

typedef struct {
    gptc_dtype dt;
    const char *name;
    size_t es;
    double u; /* unit roundoff: the largest relative error of rounding to nearest */
} dtype_info;
static const dtype_info DTYPES[] = {{GPTC_DTYPE_F32, "f32", 4, 0x1p-24},
                                    {GPTC_DTYPE_F16, "f16", 2, 0x1p-11},
                                    {GPTC_DTYPE_BF16, "bf16", 2, 0x1p-8}};

static void put(gptc_dtype dt, void *base, size_t i, float x) {
    if (dt == GPTC_DTYPE_F16) {
        __half h = __float2half_rn(x);
        memcpy((char *)base + 2 * i, &h, 2);
    } else if (dt == GPTC_DTYPE_BF16) {
        __nv_bfloat16 h = __float2bfloat16_rn(x);
        memcpy((char *)base + 2 * i, &h, 2);
    } else {
        memcpy((char *)base + 4 * i, &x, 4);
    }
}
static float get(gptc_dtype dt, const void *base, size_t i) {
    if (dt == GPTC_DTYPE_F16) {
        __half h;
        memcpy(&h, (const char *)base + 2 * i, 2);
        return __half2float(h);
    }
    if (dt == GPTC_DTYPE_BF16) {
        __nv_bfloat16 h;
        memcpy(&h, (const char *)base + 2 * i, 2);
        return __bfloat162float(h);
    }
    float x;
    memcpy(&x, (const char *)base + 4 * i, 4);
    return x;
}
/* Fills base[0, n) with uniform values in [a, b) rounded to dt; f gets them as floats. */
static void fill_dt(gptc_dtype dt, void *base, float *f, size_t n, double a, double b) {
    for (size_t i = 0; i < n; i++) {
        put(dt, base, i, uni(a, b));
        f[i] = get(dt, base, i);
    }
}

/*
 * x rounded to dt to nearest, ties to even, with overflow to infinity, as
 * the device's conversions round; computed in float64 from the format's
 * parameters rather than with CUDA's host conversions, so the conversion
 * test has an independent reference.
 */
static double round_ref(gptc_dtype dt, float xf) {
    if (dt == GPTC_DTYPE_F32 || xf == 0.0f || isnan(xf) || isinf(xf)) return xf;
    int p = dt == GPTC_DTYPE_F16 ? 11 : 8;        /* significand bits */
    int emin = dt == GPTC_DTYPE_F16 ? -14 : -126; /* exponent of the smallest normal */
    double maxv = dt == GPTC_DTYPE_F16 ? 65504.0 : ldexp(2.0 - ldexp(1.0, -7), 127);
    int e;
    frexp(fabs((double)xf), &e);
    e -= 1; /* |x| in [2^e, 2^(e+1)) */
    if (e < emin) e = emin;
    double q = ldexp(1.0, e - (p - 1)); /* the spacing of dt's values there */
    double r = nearbyint((double)xf / q) * q;
    return fabs(r) > maxv ? copysign(INFINITY, (double)xf) : r;
}

/* ---- reports ---- */

typedef struct {
    double diff, ref; /* max |got - ref|, max |ref| */
} err_t;
static void err_add(err_t *e, double got, double ref) {
    double d = fabs(got - ref);
    if (isnan(d)) d = INFINITY; /* a NaN output, or the NaN pre-fill left unwritten */
    if (d > e->diff) e->diff = d;
    if (fabs(ref) > e->ref) e->ref = fabs(ref);
}
static double err_rel(const err_t *e) { return e->diff / (e->ref > 0 ? e->ref : 1.0); }

typedef struct {
    int ok;
    size_t len;
    char text[1024];
} report;
static void rep_init(report *r) {
    r->ok = 1;
    r->len = 0;
    r->text[0] = 0;
}
static void rep_add(report *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->text + r->len, sizeof r->text - r->len, fmt, ap);
    va_end(ap);
    if (n > 0) r->len = r->len + (size_t)n < sizeof r->text ? r->len + (size_t)n : sizeof r->text - 1;
}
/* Fails unless err <= bound (NaN fails). */
static void rep_err(report *r, const char *part, double err, double bound) {
    if (!(err <= bound)) r->ok = 0;
    rep_add(r, "%s%s err %.2e (bound %.2e)", r->len ? ", " : "", part, err, bound);
}
static void rep_exact(report *r, const char *part, size_t wrong) {
    if (wrong) r->ok = 0;
    if (wrong) rep_add(r, "%s%s: %zu wrong", r->len ? ", " : "", part, wrong);
    else rep_add(r, "%s%s exact", r->len ? ", " : "", part);
}
static void rep_end(report *r, const char *label) {
    printf("%-4s %s: %s\n", r->ok ? "ok" : "FAIL", label, r->text);
    fflush(stdout);
    g_cases++;
    if (!r->ok) g_failed++;
}

static size_t count_changed(const void *a, const void *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((const unsigned char *)a)[i] != ((const unsigned char *)b)[i];
    return k;
}

/* The NaN pre-fill, in any dtype, is all one bits. */
static int all_ones(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0xff) return 0;
    return 1;
}

/* ---- activations in float64 ---- */

static double softplus_d(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
static double gelu_erf_d(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

/* The functions themselves (torch's softplus threshold of 20, a 2e-9
 * relative difference, left out), not the kernels' fp32 formulas. */
static double act_ref(gptc_act a, double v) {
    switch (a) {
    case ACT_GELU_TANH:
        return 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    case ACT_GELU_ERF: return gelu_erf_d(v);
    case ACT_GELU_10: return fmin(fmax(gelu_erf_d(v), -10.0), 10.0);
    case ACT_QUICK_GELU: return v * sigmoid_d(1.702 * v);
    case ACT_RELU: return v > 0 ? v : 0.0;
    case ACT_RELU2: return v > 0 ? v * v : 0.0;
    case ACT_RELU6: return fmin(fmax(v, 0.0), 6.0);
    case ACT_LEAKY_RELU: return v >= 0 ? v : 0.01 * v;
    case ACT_SILU: return v * sigmoid_d(v);
    case ACT_TANH: return tanh(v);
    case ACT_SIGMOID: return sigmoid_d(v);
    case ACT_MISH: return v * tanh(softplus_d(v));
    case ACT_LINEAR: return v;
    case ACT_LAPLACE: return 0.5 * (1.0 + erf((v - 0.707107) / (0.282095 * sqrt(2.0))));
    case ACT_HARDSWISH: return v * fmin(fmax(v + 3.0, 0.0), 6.0) / 6.0;
    case ACT_SQRT_SOFTPLUS: return sqrt(softplus_d(v));
    }
    return NAN;
}
static const struct {
    gptc_act act;
    const char *name;
} ACTS[] = {{ACT_GELU_TANH, "gelu_tanh"}, {ACT_GELU_ERF, "gelu_erf"},     {ACT_GELU_10, "gelu_10"},
            {ACT_QUICK_GELU, "quick_gelu"}, {ACT_RELU, "relu"},           {ACT_RELU2, "relu2"},
            {ACT_RELU6, "relu6"},         {ACT_LEAKY_RELU, "leaky_relu"}, {ACT_SILU, "silu"},
            {ACT_TANH, "tanh"},           {ACT_SIGMOID, "sigmoid"},       {ACT_MISH, "mish"},
            {ACT_LINEAR, "linear"},       {ACT_LAPLACE, "laplace"},       {ACT_HARDSWISH, "hardswish"},
            {ACT_SQRT_SOFTPLUS, "sqrt_softplus"}};
#define N_ACTS (int)(sizeof ACTS / sizeof ACTS[0])
static const char *act_name(gptc_act a) {
    for (int k = 0; k < N_ACTS; k++)
        if (ACTS[k].act == a) return ACTS[k].name;
    return "?";
}

/* ---- the epilogue modes, shared by gemv, gemv_ln and cuda_epilogue ---- */

typedef cudaError_t (*epi_launch)(const void *ctx, int T, cuda_epi e);
typedef struct {
    const char *kernel;
    const dtype_info *d;
    int I, O;
    const double *v;      /* (T, O): the float64 products, without the bias */
    const float *bias;    /* (O) host */
    const float *d_bias;  /* (O) device */
    double rel_tol;       /* bound of the kernel's fp32 v + bias, relative to its max */
    const double *amb;    /* (T, O) or NULL: more absolute error allowed per output */
    epi_launch launch;
    const void *ctx;
} epi_job;

/* Runs one epilogue mode on the first T rows and checks every byte it may
 * and may not write. gap: ldo = O + gap (those columns must stay as they were). */
static void run_epi(const epi_job *j, int T, int mode, gptc_act act, int with_bias, int gap) {
    const dtype_info *d = j->d;
    int O = j->O, ldo = O + gap, C = O / 3;
    char label[160];
    const char *mname = mode == EPI_STORE ? "store" : mode == EPI_QKV ? "qkv" : mode == EPI_RESID ? "resid" : "act";
    snprintf(label, sizeof label, "%-8s %-4s I=%-5d O=%-5d T=%d %s%s%s%s", j->kernel, d->name, j->I, O, T,
             mname, mode == EPI_ACT ? " " : "", mode == EPI_ACT ? act_name(act) : "",
             with_bias ? " +bias" : "");
    size_t n_out = (size_t)T * ldo, es_out = mode == EPI_ACT ? d->es : 4;
    unsigned char *h0 = (unsigned char *)xmalloc(n_out * es_out);
    unsigned char *h = (unsigned char *)xmalloc(n_out * es_out);
    reseed(label);
    if (mode == EPI_RESID)
        for (size_t i = 0; i < n_out; i++) ((float *)h0)[i] = uni(-5, 5);
    else memset(h0, 0xff, n_out * es_out); /* NaN in every dtype */
    void *d_out = dupload(h0, n_out * es_out);

    /* QKV: the pass sits at P in a cache of max_len rows; the others stay NaN. */
    int P = 2 + T, max_len = 2 * T + 4;
    size_t n_cache = (size_t)max_len * C * d->es;
    void *d_k = NULL, *d_v = NULL;
    int32_t *d_pos = NULL;
    if (mode == EPI_QKV) {
        d_k = dalloc(n_cache);
        d_v = dalloc(n_cache);
        CK(cudaMemset(d_k, 0xff, n_cache));
        CK(cudaMemset(d_v, 0xff, n_cache));
        d_pos = (int32_t *)dupload(&P, sizeof P);
    }
    cuda_epi e;
    memset(&e, 0, sizeof e);
    e.mode = mode;
    e.bias = with_bias ? j->d_bias : NULL;
    e.out = d_out;
    e.ldo = ldo;
    e.k_cache = d_k;
    e.v_cache = d_v;
    e.C = C;
    e.pos = d_pos;
    e.act = act;
    CK(j->launch(j->ctx, T, e));
    download(h, d_out, n_out * es_out);

    double M = 0, amb = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < O; o++) {
            double vb = j->v[(size_t)t * O + o] + (with_bias ? j->bias[o] : 0.0);
            M = fmax(M, fabs(vb));
            if (j->amb) amb = fmax(amb, j->amb[(size_t)t * O + o]);
        }
    double ea = j->rel_tol * M + amb; /* absolute bound of the kernel's fp32 v + bias */
    err_t eo = {0, 0};
    double prop = 0; /* EPI_ACT: ea carried through the activation */
    size_t gap_changed = 0;
    for (int t = 0; t < T; t++) {
        size_t row = (size_t)t * ldo;
        gap_changed += count_changed(h + (row + O) * es_out, h0 + (row + O) * es_out, (size_t)gap * es_out);
        for (int o = 0; o < O; o++) {
            double vb = j->v[(size_t)t * O + o] + (with_bias ? j->bias[o] : 0.0);
            size_t k = row + o;
            if (mode == EPI_ACT) {
                double a = act_ref(act, vb);
                err_add(&eo, get(d->dt, h, k), a);
                prop = fmax(prop, fmax(fabs(act_ref(act, vb + ea) - a), fabs(act_ref(act, vb - ea) - a)));
            } else if (mode == EPI_RESID) {
                err_add(&eo, ((float *)h)[k], (double)((float *)h0)[k] + vb);
            } else {
                err_add(&eo, ((float *)h)[k], vb);
            }
        }
    }
    double R = eo.ref > 0 ? eo.ref : 1.0;
    report r;
    rep_init(&r);
    if (mode == EPI_ACT) rep_err(&r, "out", err_rel(&eo), 2 * d->u + 2e-6 + prop / R);
    else if (mode == EPI_RESID) rep_err(&r, "out", err_rel(&eo), ea / R + 0x1p-23);
    else rep_err(&r, "out", err_rel(&eo), ea / R);
    if (gap) rep_exact(&r, "ldo gap", gap_changed);

    if (mode == EPI_QKV) {
        unsigned char *hk = (unsigned char *)xmalloc(n_cache), *hv = (unsigned char *)xmalloc(n_cache);
        download(hk, d_k, n_cache);
        download(hv, d_v, n_cache);
        err_t ek = {0, 0}, ev = {0, 0};
        size_t other = 0;
        for (int p = 0; p < max_len; p++) {
            int t = p - P;
            for (int c = 0; c < C; c++) {
                size_t k = (size_t)p * C + c;
                if (t < 0 || t >= T) {
                    other += !all_ones(hk + k * d->es, d->es) + !all_ones(hv + k * d->es, d->es);
                    continue;
                }
                const double *vr = j->v + (size_t)t * O;
                double kb = vr[C + c] + (with_bias ? j->bias[C + c] : 0.0);
                double vb = vr[2 * C + c] + (with_bias ? j->bias[2 * C + c] : 0.0);
                err_add(&ek, get(d->dt, hk, k), kb);
                err_add(&ev, get(d->dt, hv, k), vb);
            }
        }
        rep_err(&r, "k cache", err_rel(&ek), ea / (ek.ref > 0 ? ek.ref : 1) + 2 * d->u);
        rep_err(&r, "v cache", err_rel(&ev), ea / (ev.ref > 0 ? ev.ref : 1) + 2 * d->u);
        rep_exact(&r, "other cache rows", other);
        free(hk);
        free(hv);
        CK(cudaFree(d_k));
        CK(cudaFree(d_v));
        CK(cudaFree(d_pos));
    }
    rep_end(&r, label);
    CK(cudaFree(d_out));
    free(h0);
    free(h);
}

/* ---- gemv, gemv_ln ---- */

#define TMAX 17 /* rows of input generated; the cases take the first T */
/* 17: past GEMV_NT_MIN (16), blocks of 8 tokens, the last one partial */
static const int GEMV_T[] = {1, 2, 3, 7, 17};

typedef struct {
    gptc_dtype dt;
    const void *in; /* gemv: (T, I) dtype; gemv_ln and epilogue: (T, I or O) fp32 */
    const void *w;
    int ldw, I, O;
    const float *ln_w, *ln_b;
    float eps;
    void *xn; /* gemv_ln: (T, I) dtype for the normalised rows of T > 1, or NULL */
} gemv_ctx;
static cudaError_t launch_gemv(const void *ctx, int T, cuda_epi e) {
    const gemv_ctx *c = (const gemv_ctx *)ctx;
    return cuda_gemv(c->dt, c->in, c->w, c->ldw, T, c->I, c->O, e, g_st);
}
static cudaError_t launch_gemv_ln(const void *ctx, int T, cuda_epi e) {
    const gemv_ctx *c = (const gemv_ctx *)ctx;
    return cuda_gemv_ln(c->dt, (const float *)c->in, c->ln_w, c->ln_b, c->eps, c->w, c->ldw, T, c->I,
                        c->O, e, c->xn, g_st);
}
static cudaError_t launch_epilogue(const void *ctx, int T, cuda_epi e) {
    const gemv_ctx *c = (const gemv_ctx *)ctx;
    return cuda_epilogue(c->dt, (const float *)c->in, T, c->O, e, g_st);
}
/* EPI_QKV as a prompt's product runs it: cuBLASLt stores v + bias into out
 * (here the store epilogue stands in), then cuda_kv_store copies the K and
 * V thirds into the cache. */
static cudaError_t launch_kv_store(const void *ctx, int T, cuda_epi e) {
    const gemv_ctx *c = (const gemv_ctx *)ctx;
    cuda_epi s = e;
    s.mode = EPI_STORE;
    cudaError_t err = cuda_epilogue(c->dt, (const float *)c->in, T, c->O, s, g_st);
    return err != cudaSuccess ? err : cuda_kv_store(c->dt, (const float *)e.out, T, e, g_st);
}

/* v (TMAX, O) = x (TMAX, I) @ w (O, I)^T in float64; TMAX independent sums per weight row. */
static void products(double *v, const float *x, const float *w, int I, int O) {
    for (int o = 0; o < O; o++) {
        const float *wr = w + (size_t)o * I;
        double s[TMAX] = {0};
        for (int i = 0; i < I; i++) {
            double wi = wr[i];
            for (int t = 0; t < TMAX; t++) s[t] += (double)x[(size_t)t * I + i] * wi;
        }
        for (int t = 0; t < TMAX; t++) v[(size_t)t * O + o] = s[t];
    }
}

/*
 * xn (TMAX, I) = layernorm(x) * w + b in float64, rounded to dt as the
 * kernel rounds its fp32 value. Where the fp32 value may round the other
 * way (the float64 value within 4e-6 relative of the terms of a rounding
 * midpoint: the fp32 norm's error is ~5e-7), amb (TMAX, O) gets that ulp
 * times |w_oi| for every output o.
 */
static void ln_rounded(gptc_dtype dt, const float *x, const float *lw, const float *lb, float eps, int I,
                       int O, const float *w, float *xn, double *amb) {
    int *ai = (int *)xmalloc((size_t)I * sizeof(int));
    double *au = (double *)xmalloc((size_t)I * sizeof(double));
    for (int t = 0; t < TMAX; t++) {
        const float *xr = x + (size_t)t * I;
        double mean = 0, var = 0;
        for (int i = 0; i < I; i++) mean += xr[i];
        mean /= I;
        for (int i = 0; i < I; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= I;
        double rstd = 1.0 / sqrt(var + (double)eps);
        int na = 0;
        for (int i = 0; i < I; i++) {
            double a = (xr[i] - mean) * rstd * lw[i], y = a + lb[i];
            xn[(size_t)t * I + i] = (float)round_ref(dt, (float)y);
            if (dt == GPTC_DTYPE_F32) continue;
            double s = 4e-6 * ((fabs(xr[i]) + fabs(mean)) * rstd * fabs(lw[i]) + fabs(lb[i]));
            double lo = round_ref(dt, (float)(y - s)), hi = round_ref(dt, (float)(y + s));
            if (lo != hi) ai[na] = i, au[na++] = hi - lo;
        }
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int k = 0; k < na; k++) s += au[k] * fabs(w[(size_t)o * I + ai[k]]);
            amb[(size_t)t * O + o] = s;
        }
    }
    free(ai);
    free(au);
}

static void test_gemv(const dtype_info *d, int I, int O, int all_acts_T) {
    char name[64];
    snprintf(name, sizeof name, "gemv %s %dx%d", d->name, I, O);
    reseed(name);
    gptc_dtype dt = d->dt;
    int ldw = cuda_pad_row(I);
    /* v's standard deviation ~3: the activations see their interesting
     * ranges (relu6's clip, hardswish's knees, gelu_10's clip at the tail). */
    double s = 9.0 / sqrt((double)I);
    float *wf = (float *)xmalloc((size_t)O * I * sizeof(float));
    unsigned char *wr = (unsigned char *)xcalloc((size_t)O * ldw, d->es); /* padding zero */
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++) {
            put(dt, wr, (size_t)o * ldw + i, uni(-s, s));
            wf[(size_t)o * I + i] = get(dt, wr, (size_t)o * ldw + i);
        }
    float *xin = (float *)xmalloc((size_t)TMAX * I * sizeof(float));
    unsigned char *xr = (unsigned char *)xmalloc((size_t)TMAX * I * d->es);
    fill_dt(dt, xr, xin, (size_t)TMAX * I, -1, 1);
    float *bias = (float *)xmalloc((size_t)O * sizeof(float));
    for (int o = 0; o < O; o++) bias[o] = uni(-1, 1);
    /* The layer norm's input has a mean away from zero, as a residual has. */
    float *x = (float *)xmalloc((size_t)TMAX * I * sizeof(float));
    float *lw = (float *)xmalloc((size_t)I * sizeof(float)), *lb = (float *)xmalloc((size_t)I * sizeof(float));
    for (size_t i = 0; i < (size_t)TMAX * I; i++) x[i] = 0.7f + uni(-1.5, 1.5);
    for (int i = 0; i < I; i++) lw[i] = uni(0.5, 1.5), lb[i] = uni(-0.5, 0.5);
    float eps = 1e-5f;
    double *v = (double *)xmalloc((size_t)TMAX * O * sizeof(double));
    double *vln = (double *)xmalloc((size_t)TMAX * O * sizeof(double));
    double *amb = (double *)xmalloc((size_t)TMAX * O * sizeof(double));
    float *xn = (float *)xmalloc((size_t)TMAX * I * sizeof(float));
    products(v, xin, wf, I, O);
    ln_rounded(dt, x, lw, lb, eps, I, O, wf, xn, amb);
    products(vln, xn, wf, I, O);

    void *d_w = dupload(wr, (size_t)O * ldw * d->es);
    void *d_in = dupload(xr, (size_t)TMAX * I * d->es);
    void *d_x = dupload(x, (size_t)TMAX * I * sizeof(float));
    float *d_lw = (float *)dupload(lw, (size_t)I * sizeof(float));
    float *d_lb = (float *)dupload(lb, (size_t)I * sizeof(float));
    float *d_bias = (float *)dupload(bias, (size_t)O * sizeof(float));
    void *d_xn = dalloc((size_t)TMAX * I * d->es);
    gemv_ctx cg = {dt, d_in, d_w, ldw, I, O, NULL, NULL, 0.0f, NULL};
    gemv_ctx cl = {dt, d_x, d_w, ldw, I, O, d_lw, d_lb, eps, d_xn};
    gemv_ctx cl0 = {dt, d_x, d_w, ldw, I, O, d_lw, d_lb, eps, NULL};
    /* fp32 sums: 1e-5 of the largest output. The 16-bit dtypes multiply on
     * tensor cores, whose fp32 accumulator is truncated rather than rounded
     * at each mma: up to 2^-23 of a partial sum (of the order of the
     * largest output) for each of the ceil(I / 16) steps. */
    double tol = 1e-5 + (d->es == 2 ? ldexp((double)((I + 15) / 16), -23) : 0.0);
    epi_job jg = {"gemv", d, I, O, v, bias, d_bias, tol, NULL, launch_gemv, &cg};
    epi_job jl = {"gemv_ln", d, I, O, vln, bias, d_bias, tol, amb, launch_gemv_ln, &cl};
    /* gemv_ln without rows for the layer norm: a token per block */
    epi_job jl0 = {"gemv_ln-", d, I, O, vln, bias, d_bias, tol, amb, launch_gemv_ln, &cl0};
    /* gemv_ln stages the row, ln_w and ln_b: 3 ldw floats of shared memory. */
    int ln_fits = (size_t)3 * ldw * sizeof(float) + 128 <= g_smem_optin;
    for (int k = 0; k < (int)(sizeof GEMV_T / sizeof GEMV_T[0]); k++) {
        int T = GEMV_T[k];
        if (g_quick && T != 1 && T != 3) continue;
        run_epi(&jg, T, EPI_STORE, ACT_LINEAR, 0, 0);
        run_epi(&jg, T, EPI_STORE, ACT_LINEAR, 1, 3);
        run_epi(&jg, T, EPI_ACT, ACT_GELU_TANH, 1, 0);
        run_epi(&jg, T, EPI_RESID, ACT_LINEAR, 1, 0);
        if (O % 3 == 0) run_epi(&jg, T, EPI_QKV, ACT_LINEAR, 1, 0);
        if (T == all_acts_T)
            for (int a = 0; a < N_ACTS; a++)
                if (ACTS[a].act != ACT_GELU_TANH) run_epi(&jg, T, EPI_ACT, ACTS[a].act, 1, 3);
        if (!ln_fits) continue;
        run_epi(&jl, T, EPI_STORE, ACT_LINEAR, 1, 3);
        run_epi(&jl, T, EPI_ACT, ACT_GELU_TANH, 1, 0);
        run_epi(&jl, T, EPI_RESID, ACT_LINEAR, 0, 0);
        if (O % 3 == 0) run_epi(&jl, T, EPI_QKV, ACT_LINEAR, 1, 0);
        if (T > 1) run_epi(&jl0, T, EPI_STORE, ACT_LINEAR, 1, 3);
    }
    CK(cudaFree(d_xn));
    CK(cudaFree(d_w));
    CK(cudaFree(d_in));
    CK(cudaFree(d_x));
    CK(cudaFree(d_lw));
    CK(cudaFree(d_lb));
    CK(cudaFree(d_bias));
    free(wf), free(wr), free(xin), free(xr), free(bias), free(x), free(lw), free(lb);
    free(v), free(vln), free(amb), free(xn);
}

/*
 * Batch invariance of the GEMV: a launch of T tokens (41: past a block of 32,
 * the tensor-core kernel's most, the last one partial; 29: one group cut in
 * two blocks) gives every token the bytes a launch of that token
 * alone gives, plain and with the layer norm. And the QKV epilogue with a row
 * per token (the paged cache) puts K and V exactly there, nowhere else.
 */
static void test_gemv_invariance(const dtype_info *d, int I, int O, int T) {
    char label[128];
    snprintf(label, sizeof label, "gemv rows %-4s I=%d O=%d T=%d: = alone", d->name, I, O, T);
    reseed(label);
    gptc_dtype dt = d->dt;
    int ldw = cuda_pad_row(I), C = O / 3;
    unsigned char *wr = (unsigned char *)xcalloc((size_t)O * ldw, d->es), *xr = (unsigned char *)xmalloc((size_t)T * I * d->es);
    for (int o = 0; o < O; o++)
        for (int i = 0; i < I; i++) put(dt, wr, (size_t)o * ldw + i, uni(-0.1, 0.1));
    for (size_t i = 0; i < (size_t)T * I; i++) put(dt, xr, i, uni(-1, 1));
    float *x = (float *)xmalloc((size_t)T * I * sizeof(float)), *lw = (float *)xmalloc((size_t)I * sizeof(float));
    float *lb = (float *)xmalloc((size_t)I * sizeof(float)), *bias = (float *)xmalloc((size_t)O * sizeof(float));
    for (size_t i = 0; i < (size_t)T * I; i++) x[i] = 0.5f + uni(-1, 1);
    for (int i = 0; i < I; i++) lw[i] = uni(0.5, 1.5), lb[i] = uni(-0.5, 0.5);
    for (int o = 0; o < O; o++) bias[o] = uni(-1, 1);
    void *d_w = dupload(wr, (size_t)O * ldw * d->es), *d_in = dupload(xr, (size_t)T * I * d->es);
    float *d_x = (float *)dupload(x, (size_t)T * I * sizeof(float)), *d_lw = (float *)dupload(lw, (size_t)I * 4);
    float *d_lb = (float *)dupload(lb, (size_t)I * 4), *d_bias = (float *)dupload(bias, (size_t)O * 4);
    size_t n_out = (size_t)T * O * sizeof(float);
    float *d_out = (float *)dalloc(n_out);
    unsigned char *all = (unsigned char *)xmalloc(n_out), *one = (unsigned char *)xmalloc(n_out);
    size_t wrong[4] = {0, 0, 0, 0};
    /* The layer norm's parameters 4 bytes past an aligned address (a
     * caller's buffers; the engine's arena aligns them): the pipe's own
     * layer norm copies them 16 bytes at a time, so it must leave them to
     * ln_stage_kernel. */
    float *d_lwu = (float *)dalloc((size_t)(I + 1) * 4), *d_lbu = (float *)dalloc((size_t)(I + 1) * 4);
    CK(cudaMemcpy(d_lwu + 1, d_lw, (size_t)I * 4, cudaMemcpyDeviceToDevice));
    CK(cudaMemcpy(d_lbu + 1, d_lb, (size_t)I * 4, cudaMemcpyDeviceToDevice));
    void *d_xn = dalloc((size_t)T * I * d->es);
    cuda_epi e;
    memset(&e, 0, sizeof e);
    e.mode = EPI_STORE;
    e.bias = d_bias;
    e.ldo = O;
    for (int ln = 0; ln < 4; ln++) { /* plain; layer norm through rows of xn; without them; unaligned */
        if (ln && (size_t)3 * ldw * sizeof(float) + 128 > g_smem_optin) continue;
        CK(cudaMemset(d_out, 0xff, n_out));
        e.out = d_out;
        const float *lw_ = ln == 3 ? d_lwu + 1 : d_lw, *lb_ = ln == 3 ? d_lbu + 1 : d_lb;
        if (ln) CK(cuda_gemv_ln(dt, d_x, lw_, lb_, 1e-5f, d_w, ldw, T, I, O, e, ln != 2 ? d_xn : NULL, g_st));
        else CK(cuda_gemv(dt, d_in, d_w, ldw, T, I, O, e, g_st));
        download(all, d_out, n_out);
        CK(cudaMemset(d_out, 0xff, n_out));
        for (int t = 0; t < T; t++) {
            e.out = d_out + (size_t)t * O;
            if (ln) CK(cuda_gemv_ln(dt, d_x + (size_t)t * I, lw_, lb_, 1e-5f, d_w, ldw, 1, I, O, e, NULL, g_st));
            else CK(cuda_gemv(dt, (const char *)d_in + (size_t)t * I * d->es, d_w, ldw, 1, I, O, e, g_st));
        }
        download(one, d_out, n_out);
        wrong[ln] = count_changed(all, one, n_out);
    }
    /* QKV into the rows 2 (T - 1 - t) + 1 of a cache of 2 T rows. */
    size_t wrong_rows = 0, other = 0;
    if (O % 3 == 0) {
        int32_t rows[64] = {0};
        for (int t = 0; t < T; t++) rows[t] = 2 * (T - 1 - t) + 1;
        size_t n_cache = (size_t)2 * T * C * d->es;
        void *d_k = dalloc(n_cache), *d_v = dalloc(n_cache);
        int32_t *d_rows = (int32_t *)dupload(rows, sizeof rows);
        CK(cudaMemset(d_k, 0xff, n_cache));
        CK(cudaMemset(d_v, 0xff, n_cache));
        cuda_epi q = e;
        q.mode = EPI_QKV;
        q.out = d_out;
        q.k_cache = d_k;
        q.v_cache = d_v;
        q.C = C;
        q.rows = d_rows;
        CK(cuda_gemv(dt, d_in, d_w, ldw, T, I, O, q, g_st));
        download(all, d_out, n_out);
        unsigned char *hk = (unsigned char *)xmalloc(n_cache), *hv = (unsigned char *)xmalloc(n_cache);
        unsigned char *want = (unsigned char *)xmalloc(d->es);
        download(hk, d_k, n_cache);
        download(hv, d_v, n_cache);
        for (int r = 0; r < 2 * T; r++) {
            int t = r % 2 ? T - 1 - (r - 1) / 2 : -1;
            for (int c = 0; c < C; c++) {
                size_t k = (size_t)r * C + c;
                if (t < 0) {
                    other += !all_ones(hk + k * d->es, d->es) + !all_ones(hv + k * d->es, d->es);
                    continue;
                }
                const float *o = (const float *)all + (size_t)t * O;
                put(dt, want, 0, o[C + c]);
                wrong_rows += memcmp(want, hk + k * d->es, d->es) != 0;
                put(dt, want, 0, o[2 * C + c]);
                wrong_rows += memcmp(want, hv + k * d->es, d->es) != 0;
            }
        }
        free(hk), free(hv), free(want);
        CK(cudaFree(d_k));
        CK(cudaFree(d_v));
        CK(cudaFree(d_rows));
    }
    report r;
    rep_init(&r);
    rep_exact(&r, "gemv", wrong[0]);
    rep_exact(&r, "gemv_ln", wrong[1]);
    rep_exact(&r, "gemv_ln a token per block", wrong[2]);
    rep_exact(&r, "gemv_ln, parameters not 16-byte aligned", wrong[3]);
    if (O % 3 == 0) {
        rep_exact(&r, "qkv rows", wrong_rows);
        rep_exact(&r, "other cache rows", other);
    }
    rep_end(&r, label);
    CK(cudaFree(d_w));
    CK(cudaFree(d_in));
    CK(cudaFree(d_x));
    CK(cudaFree(d_lw));
    CK(cudaFree(d_lb));
    CK(cudaFree(d_bias));
    CK(cudaFree(d_out));
    CK(cudaFree(d_xn));
    CK(cudaFree(d_lwu));
    CK(cudaFree(d_lbu));
    free(wr), free(xr), free(x), free(lw), free(lb), free(bias), free(all), free(one);
}

/* cuda_epilogue on a given fp32 product: every mode, v + bias one fp32 add. */
static void test_epilogue(const dtype_info *d, int O) {
    char name[64];
    snprintf(name, sizeof name, "epilogue %s %d", d->name, O);
    reseed(name);
    float *tmp = (float *)xmalloc((size_t)TMAX * O * sizeof(float));
    double *v = (double *)xmalloc((size_t)TMAX * O * sizeof(double));
    float *bias = (float *)xmalloc((size_t)O * sizeof(float));
    for (size_t i = 0; i < (size_t)TMAX * O; i++) v[i] = tmp[i] = uni(-5, 5);
    for (int o = 0; o < O; o++) bias[o] = uni(-1, 1);
    void *d_tmp = dupload(tmp, (size_t)TMAX * O * sizeof(float));
    float *d_bias = (float *)dupload(bias, (size_t)O * sizeof(float));
    gemv_ctx c = {d->dt, d_tmp, NULL, 0, O, O, NULL, NULL, 0.0f, NULL};
    epi_job j = {"epilogue", d, O, O, v, bias, d_bias, 1e-6, NULL, launch_epilogue, &c};
    static const int Ts[] = {1, 5};
    for (int k = 0; k < 2; k++) {
        int T = Ts[k];
        run_epi(&j, T, EPI_STORE, ACT_LINEAR, 0, 0);
        run_epi(&j, T, EPI_STORE, ACT_LINEAR, 1, 3);
        run_epi(&j, T, EPI_RESID, ACT_LINEAR, 1, 3);
        if (O % 3 == 0) {
            run_epi(&j, T, EPI_QKV, ACT_LINEAR, 1, 0);
            epi_job jk = j;
            jk.kernel = "kv_store";
            jk.launch = launch_kv_store;
            run_epi(&jk, T, EPI_QKV, ACT_LINEAR, 1, 0);
        }
        if (T == 5 && O < 1000)
            for (int a = 0; a < N_ACTS; a++) run_epi(&j, T, EPI_ACT, ACTS[a].act, 1, 0);
        else run_epi(&j, T, EPI_ACT, ACT_GELU_TANH, 1, 0);
    }
    CK(cudaFree(d_tmp));
    CK(cudaFree(d_bias));
    free(tmp), free(v), free(bias);
}

/* ---- embedding, layer norm ---- */

static void test_embed(const dtype_info *d, int C, int T, int pos) {
    char label[128];
    snprintf(label, sizeof label, "embed    %-4s C=%d T=%d pos=%d", d->name, C, T, pos);
    reseed(label);
    const int V = 300, NP = 1024; /* vocabulary, positions */
    int ldw = cuda_pad_row(C);
    unsigned char *wte = (unsigned char *)xcalloc((size_t)V * ldw, d->es);
    float *wtef = (float *)xmalloc((size_t)V * C * sizeof(float));
    for (int r = 0; r < V; r++)
        for (int c = 0; c < C; c++) {
            put(d->dt, wte, (size_t)r * ldw + c, uni(-1, 1));
            wtef[(size_t)r * C + c] = get(d->dt, wte, (size_t)r * ldw + c);
        }
    float *wpe = (float *)xmalloc((size_t)NP * C * sizeof(float));
    for (size_t i = 0; i < (size_t)NP * C; i++) wpe[i] = uni(-0.5, 0.5);
    int32_t *ids = (int32_t *)xmalloc((size_t)T * sizeof(int32_t));
    for (int t = 0; t < T; t++) ids[t] = (int32_t)(rnd64() % V);
    ids[0] = V - 1; /* the table's two ends */
    if (T > 1) ids[T - 1] = 0;
    void *d_wte = dupload(wte, (size_t)V * ldw * d->es);
    float *d_wpe = (float *)dupload(wpe, (size_t)NP * C * sizeof(float));
    int32_t *d_ids = (int32_t *)dupload(ids, (size_t)T * sizeof(int32_t));
    int32_t *d_pos = (int32_t *)dupload(&pos, sizeof pos);
    float *d_x = (float *)dalloc((size_t)T * C * sizeof(float));
    CK(cudaMemset(d_x, 0xff, (size_t)T * C * sizeof(float)));
    CK(cuda_embed(d->dt, d_x, d_wte, ldw, d_wpe, d_ids, d_pos, T, C, g_st));
    float *x = (float *)xmalloc((size_t)T * C * sizeof(float));
    download(x, d_x, (size_t)T * C * sizeof(float));
    err_t e = {0, 0};
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++)
            err_add(&e, x[(size_t)t * C + c],
                    (double)wtef[(size_t)ids[t] * C + c] + wpe[(size_t)(pos + t) * C + c]);
    report r;
    rep_init(&r);
    rep_err(&r, "x", err_rel(&e), 1e-6);
    rep_end(&r, label);
    CK(cudaFree(d_wte));
    CK(cudaFree(d_wpe));
    CK(cudaFree(d_ids));
    CK(cudaFree(d_pos));
    CK(cudaFree(d_x));
    free(wte), free(wtef), free(wpe), free(ids), free(x);
}

static void test_layernorm(const dtype_info *d, int C, int T) {
    char label[128];
    snprintf(label, sizeof label, "layernorm %-4s C=%d T=%d", d->name, C, T);
    reseed(label);
    size_t n = (size_t)T * C;
    float *x = (float *)xmalloc(n * sizeof(float));
    float *w = (float *)xmalloc((size_t)C * sizeof(float)), *b = (float *)xmalloc((size_t)C * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 2.0f + uni(-1.5, 1.5);
    for (int c = 0; c < C; c++) w[c] = uni(0.5, 1.5), b[c] = uni(-0.5, 0.5);
    float eps = 1e-5f;
    float *d_x = (float *)dupload(x, n * sizeof(float));
    float *d_w = (float *)dupload(w, (size_t)C * sizeof(float));
    float *d_b = (float *)dupload(b, (size_t)C * sizeof(float));
    void *d_out = dalloc(n * d->es);
    CK(cudaMemset(d_out, 0xff, n * d->es));
    CK(cuda_layernorm(d->dt, d_out, d_x, d_w, d_b, T, C, eps, g_st));
    void *out = xmalloc(n * d->es);
    download(out, d_out, n * d->es);
    err_t e = {0, 0};
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        double mean = 0, var = 0;
        for (int c = 0; c < C; c++) mean += xr[c];
        mean /= C;
        for (int c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= C;
        double rstd = 1.0 / sqrt(var + (double)eps);
        for (int c = 0; c < C; c++)
            err_add(&e, get(d->dt, out, (size_t)t * C + c), (xr[c] - mean) * rstd * w[c] + b[c]);
    }
    report r;
    rep_init(&r);
    rep_err(&r, "out", err_rel(&e), 1e-5 + 2 * d->u);
    rep_end(&r, label);
    CK(cudaFree(d_x));
    CK(cudaFree(d_w));
    CK(cudaFree(d_b));
    CK(cudaFree(d_out));
    free(x), free(w), free(b), free(out);
}

/* ---- conversion ---- */

static void test_convert(const dtype_info *d, size_t n) {
    char label[128];
    snprintf(label, sizeof label, "convert  %-4s n=%zu", d->name, n);
    reseed(label);
    float *src = (float *)xmalloc(n * sizeof(float));
    /* Magnitudes over the whole range of the format, past both ends:
     * subnormals, flush to zero, overflow to infinity. */
    double lo = d->dt == GPTC_DTYPE_F16 ? -28 : -140, hi = d->dt == GPTC_DTYPE_F16 ? 17 : 128;
    for (size_t i = 0; i < n; i++) src[i] = (float)(uni(-1, 1) * exp2(uni(lo, hi)));
    /* Exact halfway cases of both 16-bit formats and the edges. */
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f,
                             1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -(1.0f + 0x1p-8f), 65504.0f, 65519.0f,
                             65520.0f, 0x1p-24f, 0x1p-25f, 3 * 0x1p-26f, 0x1p-14f - 0x1p-25f, 1e-40f,
                             FLT_MAX, 0x1.fep127f, 0x1.ffp127f, -0x1.ffp127f, 0x1p-133f, 0x1p-134f};
    size_t ns = sizeof special / sizeof special[0];
    for (size_t i = 0; i < ns && i < n; i++) src[i] = special[i];
    float *d_src = (float *)dupload(src, n * sizeof(float));
    void *d_dst = dalloc(n * d->es);
    CK(cuda_convert(d->dt, d_dst, d_src, n, g_st));
    void *dst = xmalloc(n * d->es);
    download(dst, d_dst, n * d->es);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        double g = get(d->dt, dst, i), r = round_ref(d->dt, src[i]);
        if (!(g == r || (isnan(g) && isnan(r)))) {
            if (wrong++ < 3) printf("     convert %s: %a -> %a, expected %a\n", d->name, src[i], g, r);
        }
    }
    report r;
    rep_init(&r);
    rep_exact(&r, "values", wrong);
    rep_end(&r, label);
    CK(cudaFree(d_src));
    CK(cudaFree(d_dst));
    free(src), free(dst);
}

/* ---- attention ---- */

enum { SC_SQRT, SC_LAYER, SC_ONE };
typedef struct {
    int C, NH, T, pos, max_len, scale, quick;
} att_case;
/* The split kernel takes T < 16 with D % 8 == 0 and D <= 256; the tiled ones
 * larger T with D <= 128 (fp16 with D = 64 on tensor cores); the rest the
 * one-block-per-query kernel ("full"). Chunks are 64 keys, query tiles 64. */
static const att_case ATT_CASES[] = {
    {768, 12, 1, 0, 1024, SC_SQRT, 1},      /* a single key */
    {768, 12, 1, 1500, 2048, SC_SQRT, 0},   /* 24 chunks, the last partial */
    {768, 12, 2, 63, 2048, SC_ONE, 1},      /* 64 and 65 keys: a chunk boundary */
    {768, 12, 7, 300, 2048, SC_LAYER, 0},
    {768, 12, 15, 0, 64, SC_SQRT, 0},       /* the largest split pass */
    {768, 12, 16, 0, 512, SC_SQRT, 1},      /* the smallest tiled pass */
    {768, 12, 17, 100, 512, SC_ONE, 0},
    {768, 12, 64, 0, 64, SC_LAYER, 0},      /* the cache exactly full */
    {768, 12, 130, 1000, 2048, SC_SQRT, 0}, /* three query tiles, behind a long cache */
    {1600, 25, 1, 2999, 3000, SC_SQRT, 0},  /* GPT-2 XL heads, cache full */
    {1600, 25, 3, 4000, 4096, SC_ONE, 0},
    {1600, 25, 65, 37, 1024, SC_SQRT, 0},
    {1600, 25, 15, 700, 1024, SC_SQRT, 0},  /* a split block takes chunks s, s + 3, ... */
    {40, 5, 1, 0, 16, SC_SQRT, 1},          /* D = 8 */
    {40, 5, 5, 60, 128, SC_ONE, 1},
    {40, 5, 20, 17, 64, SC_SQRT, 1},
    {40, 5, 100, 63, 200, SC_LAYER, 0},
    {36, 4, 1, 10, 32, SC_SQRT, 1},         /* D = 9: tiled even for one token */
    {36, 4, 40, 100, 256, SC_ONE, 0},
    {288, 4, 3, 500, 1024, SC_SQRT, 0},     /* D = 72 */
    {288, 4, 70, 10, 128, SC_SQRT, 1},
    {512, 4, 9, 200, 512, SC_ONE, 0},       /* D = 128 */
    {512, 4, 33, 100, 256, SC_SQRT, 0},
    {1600, 10, 1, 700, 1024, SC_SQRT, 0},   /* D = 160: split, then full */
    {1600, 10, 20, 50, 128, SC_SQRT, 0},
    {264, 2, 1, 5, 16, SC_SQRT, 1},         /* D = 132: full for every T */
    {264, 2, 17, 300, 512, SC_ONE, 0},
    {256, 1, 1, 200, 256, SC_SQRT, 0},      /* D = 256: the split kernel's largest */
    {256, 1, 16, 0, 16, SC_SQRT, 1},
    {528, 2, 2, 9, 64, SC_SQRT, 0},         /* D = 264: full */
};

static void test_attention(const dtype_info *d, const att_case *c) {
    gptc_dtype dt = d->dt;
    int C = c->C, NH = c->NH, D = C / NH, T = c->T, P = c->pos, ML = c->max_len, L = P + T;
    float scale = c->scale == SC_SQRT ? 1.0f / sqrtf((float)D)
                  : c->scale == SC_LAYER ? 1.0f / sqrtf((float)D) / 4.0f /* the 4th layer, scaled by 1/(l+1) */
                                         : 1.0f;
    int mma = 0;
    const char *path;
    if (T < ATT_SPLIT_MAXT && D % 8 == 0 && D <= 256) path = "split";
    else if (dt != GPTC_DTYPE_F32 && D == 64 && !getenv("GPTC_CUDA_NO_MMA")) path = "mma", mma = 1;
    else if (D <= 128) path = "tiled";
    else path = "full";
    char label[160];
    snprintf(label, sizeof label, "attention %-4s C=%d NH=%d D=%d T=%d pos=%d max_len=%d scale=%.4g [%s]",
             d->name, C, NH, D, T, P, ML, scale, path);
    reseed(label);

    size_t n_qkv = (size_t)T * 3 * C, n_cache = (size_t)ML * C;
    float *qkv = (float *)xmalloc(n_qkv * sizeof(float));
    for (int t = 0; t < T; t++)
        for (int k = 0; k < 3 * C; k++) qkv[(size_t)t * 3 * C + k] = k < C ? uni(-1, 1) : NAN;
    unsigned char *kr = (unsigned char *)xmalloc(n_cache * d->es), *vr = (unsigned char *)xmalloc(n_cache * d->es);
    memset(kr, 0xff, n_cache * d->es); /* rows past the pass stay NaN */
    memset(vr, 0xff, n_cache * d->es);
    float *kf = (float *)xmalloc((size_t)L * C * sizeof(float)), *vf = (float *)xmalloc((size_t)L * C * sizeof(float));
    fill_dt(dt, kr, kf, (size_t)L * C, -1, 1);
    fill_dt(dt, vr, vf, (size_t)L * C, -1, 1);

    float *d_qkv = (float *)dupload(qkv, n_qkv * sizeof(float));
    void *d_k = dupload(kr, n_cache * d->es), *d_v = dupload(vr, n_cache * d->es);
    int32_t *d_pos = (int32_t *)dupload(&P, sizeof P);
    size_t n_out = (size_t)T * C * d->es, n_scratch = cuda_attention_scratch_floats(NH, D, ML);
    size_t n_tickets = (size_t)NH * ATT_SPLIT_MAXT;
    void *d_out = dalloc(n_out);
    float *d_scratch = (float *)dalloc(n_scratch * sizeof(float));
    int *d_tickets = (int *)dalloc(n_tickets * sizeof(int));
    CK(cudaMemset(d_tickets, 0, n_tickets * sizeof(int)));
    CK(cuda_attention_prepare(D, ML));
    /* Twice: the second pass reuses the scratch and tickets the first left. */
    unsigned char *out[2];
    for (int rep = 0; rep < 2; rep++) {
        out[rep] = (unsigned char *)xmalloc(n_out);
        CK(cudaMemsetAsync(d_out, 0xff, n_out, g_st));
        CK(cuda_attention(dt, d_out, d_qkv, d_k, d_v, d_pos, T, C, NH, ML, scale, d_scratch, d_tickets, g_st));
        download(out[rep], d_out, n_out);
    }
    int *tickets = (int *)xmalloc(n_tickets * sizeof(int));
    download(tickets, d_tickets, n_tickets * sizeof(int));
    size_t nz = 0;
    for (size_t i = 0; i < n_tickets; i++) nz += tickets[i] != 0;

    err_t e = {0, 0};
    double *p = (double *)xmalloc((size_t)L * sizeof(double));
    for (int t = 0; t < T; t++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)t * 3 * C + (size_t)h * D;
            int Lt = P + t + 1;
            double m = -INFINITY, sum = 0;
            for (int j = 0; j < Lt; j++) {
                const float *kj = kf + (size_t)j * C + (size_t)h * D;
                double s = 0;
                for (int k = 0; k < D; k++) s += (double)q[k] * kj[k];
                p[j] = s * scale;
                m = fmax(m, p[j]);
            }
            for (int j = 0; j < Lt; j++) sum += (p[j] = exp(p[j] - m));
            for (int k = 0; k < D; k++) {
                double o = 0;
                for (int j = 0; j < Lt; j++) o += p[j] * vf[(size_t)j * C + (size_t)h * D + k];
                err_add(&e, get(dt, out[0], (size_t)t * C + (size_t)h * D + k), o / sum);
            }
        }
    report r;
    rep_init(&r);
    rep_err(&r, "out", err_rel(&e), 1e-5 + (mma ? 6 : 2) * d->u);
    rep_exact(&r, "rerun", count_changed(out[0], out[1], n_out));
    rep_exact(&r, "tickets", nz);
    rep_end(&r, label);
    CK(cudaFree(d_qkv));
    CK(cudaFree(d_k));
    CK(cudaFree(d_v));
    CK(cudaFree(d_pos));
    CK(cudaFree(d_out));
    CK(cudaFree(d_scratch));
    CK(cudaFree(d_tickets));
    free(qkv), free(kr), free(vr), free(kf), free(vf), free(out[0]), free(out[1]), free(tickets), free(p);
}

/*
 * Attention through block tables (the batch engine's paged cache): several
 * sequences of random lengths whose positions live in blocks scattered over
 * a pool (block size bs, blocks handed out in a shuffled order, every row no
 * sequence holds NaN), the last nq positions of each as queries. Two ways:
 * "each" - one launch of the kernel that takes every query on its own (split,
 * or full where split does not apply), all sequences together; "runs" - one
 * launch per sequence of the kernel cuda_attention picks for nq queries.
 * Checked against float64, and bitwise against cuda_attention on a
 * contiguous copy of each sequence's cache where both run the same kernel:
 * the block table may change where rows are read, never the result.
 */
typedef struct {
    int C, NH, bs, nseq, max_len, nq, quick;
} paged_case;
static const paged_case PAGED_CASES[] = {
    {768, 12, 16, 5, 300, 1, 1},  /* decode of five sequences */
    {768, 12, 16, 3, 200, 20, 1}, /* prompts: tiled (mma for fp16) per run */
    {768, 12, 1, 2, 150, 70, 0},  /* one position per block; two query tiles */
    {40, 5, 5, 4, 70, 3, 1},      /* D = 8, an odd block size */
    {36, 4, 7, 3, 50, 1, 1},      /* D = 9: full for "each", tiled for "runs" */
    {264, 2, 3, 2, 40, 17, 0},    /* D = 132: full */
    {1600, 25, 16, 3, 1100, 2, 0}, /* GPT-2 XL heads, 18 chunks */
    {1600, 25, 16, 4, 1024, 1, 0}, /* GPT-2 XL decode, 16 chunks: 6 warps, 3 each (16-bit) */
    {768, 12, 16, 2, 1000, 1, 0},  /* few pairs, long contexts: blocks of groups, with tickets */
    {768, 12, 16, 96, 200, 1, 0},  /* a wide decode pass: a block takes a query's chunks */
    {768, 12, 16, 32, 256, 1, 1},  /* gpt2 batch 32: a warp a chunk (attn_warp_kernel) */
    {1600, 25, 16, 48, 300, 1, 0}, /* the same with GPT-2 XL heads */
    {512, 4, 64, 6, 129, 9, 0},   /* D = 128, blocks of 64 */
};

static const char *att_kind_name(int k) {
    return k == CUDA_ATT_SPLIT ? "split" : k == CUDA_ATT_MMA ? "mma" : k == CUDA_ATT_TILE ? "tiled" : "full";
}

static void test_paged_attention(const dtype_info *d, const paged_case *c, int each) {
    gptc_dtype dt = d->dt;
    int C = c->C, NH = c->NH, D = C / NH, bs = c->bs, ns = c->nseq, nq = c->nq;
    float scale = 1.0f / sqrtf((float)D);
    int kind_each = D % 8 == 0 && D <= 256 ? CUDA_ATT_SPLIT : CUDA_ATT_FULL;
    int kind_run = cuda_attention_kind(dt, nq, C, NH);
    char label[192];
    snprintf(label, sizeof label, "paged attention %-4s C=%d NH=%d D=%d bs=%d seqs=%d queries=%d [%s]", d->name,
             C, NH, D, bs, ns, nq, each ? att_kind_name(kind_each) : att_kind_name(kind_run));
    reseed(label);
    enum { MAXSEQ = 128 };
    if (ns > MAXSEQ) {
        printf("FAIL paged attention: a case of %d sequences (at most %d)\n", ns, MAXSEQ);
        g_cases++, g_failed++;
        return;
    }
    int len[MAXSEQ], nb[MAXSEQ], off[MAXSEQ], maxlen = 0, total_blocks = 0;
    for (int s = 0; s < ns; s++) {
        len[s] = nq + (int)(rnd64() % (uint64_t)(c->max_len - nq + 1));
        if (s == 0) len[s] = c->max_len; /* the longest case is always there */
        nb[s] = (len[s] + bs - 1) / bs;
        off[s] = total_blocks;
        total_blocks += nb[s];
        if (len[s] > maxlen) maxlen = len[s];
    }
    /* Blocks 0 .. pool-1 shuffled; a few never used. */
    int pool = total_blocks + 3;
    int32_t *perm = (int32_t *)xmalloc((size_t)pool * sizeof(int32_t));
    for (int i = 0; i < pool; i++) perm[i] = i;
    for (int i = pool - 1; i > 0; i--) {
        int j = (int)(rnd64() % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    size_t rows = (size_t)pool * bs;
    unsigned char *kp = (unsigned char *)xmalloc(rows * C * d->es), *vp = (unsigned char *)xmalloc(rows * C * d->es);
    memset(kp, 0xff, rows * C * d->es);
    memset(vp, 0xff, rows * C * d->es);
    /* Sequence s's values as floats (len, C), and in the pool. */
    float *kf[MAXSEQ], *vf[MAXSEQ];
    for (int s = 0; s < ns; s++) {
        kf[s] = (float *)xmalloc((size_t)len[s] * C * sizeof(float));
        vf[s] = (float *)xmalloc((size_t)len[s] * C * sizeof(float));
        for (int j = 0; j < len[s]; j++) {
            size_t r = (size_t)perm[off[s] + j / bs] * bs + j % bs;
            for (int k = 0; k < C; k++) {
                put(dt, kp, r * C + k, uni(-1, 1));
                put(dt, vp, r * C + k, uni(-1, 1));
                kf[s][(size_t)j * C + k] = get(dt, kp, r * C + k);
                vf[s][(size_t)j * C + k] = get(dt, vp, r * C + k);
            }
        }
    }
    int T = ns * nq;
    float *qkv = (float *)xmalloc((size_t)T * 3 * C * sizeof(float));
    int32_t *pos = (int32_t *)xmalloc((size_t)T * sizeof(int32_t)), *tab = (int32_t *)xmalloc((size_t)T * sizeof(int32_t));
    for (int s = 0; s < ns; s++)
        for (int i = 0; i < nq; i++) {
            int t = s * nq + i;
            pos[t] = len[s] - nq + i;
            tab[t] = off[s];
            /* q of fp16 (bf16) values in an fp16 (bf16) run: what the
             * fresh path's q (below) holds too */
            for (int k = 0; k < 3 * C; k++) {
                float v = uni(-1, 1);
                if (dt == GPTC_DTYPE_F16) v = __half2float(__float2half(v));
                if (dt == GPTC_DTYPE_BF16) v = __bfloat162float(__float2bfloat16(v));
                qkv[(size_t)t * 3 * C + k] = k < C ? v : NAN;
            }
        }
    float *d_qkv = (float *)dupload(qkv, (size_t)T * 3 * C * sizeof(float));
    void *d_k = dupload(kp, rows * C * d->es), *d_v = dupload(vp, rows * C * d->es);
    int32_t *d_tables = (int32_t *)dupload(perm, (size_t)pool * sizeof(int32_t));
    int32_t *d_pos = (int32_t *)dupload(pos, (size_t)T * sizeof(int32_t));
    int32_t *d_tab = (int32_t *)dupload(tab, (size_t)T * sizeof(int32_t));
    size_t n_out = (size_t)T * C * d->es, n_scratch = cuda_attention_split_floats(NH, D, T, maxlen);
    size_t n_tickets = (size_t)NH * T;
    void *d_out = dalloc(n_out);
    float *d_scratch = (float *)dalloc(n_scratch * sizeof(float));
    int *d_tickets = (int *)dalloc(n_tickets * sizeof(int));
    CK(cudaMemset(d_tickets, 0, n_tickets * sizeof(int)));
    CK(cudaMemset(d_out, 0xff, n_out));
    CK(cuda_attention_prepare(D, maxlen));
    if (each) {
        cuda_kv_map map = {d_pos, d_tables, d_tab, bs, 0};
        CK(cuda_attention_run(kind_each, dt, d_out, d_qkv, d_k, d_v, map, T, C, NH, maxlen, scale, d_scratch,
                              d_tickets, g_st));
    } else {
        for (int s = 0; s < ns; s++) {
            size_t t0 = (size_t)s * nq;
            cuda_kv_map map = {d_pos + t0, d_tables, d_tab + t0, bs, 0};
            CK(cuda_attention_run(kind_run, dt, (char *)d_out + t0 * C * d->es, d_qkv + t0 * 3 * C, d_k, d_v,
                                  map, nq, C, NH, len[s], scale, d_scratch, d_tickets, g_st));
        }
    }
    unsigned char *out = (unsigned char *)xmalloc(n_out);
    download(out, d_out, n_out);
    /* A decode pass (a query per sequence) tells the split kernel so
     * (map.solo): it reads the older rows before its PDL wait, the same
     * bytes. */
    size_t solo_differ = 0;
    int solo_run = each && nq == 1 && kind_each == CUDA_ATT_SPLIT;
    if (solo_run) {
        void *d_out2 = dalloc(n_out);
        unsigned char *out2 = (unsigned char *)xmalloc(n_out);
        CK(cudaMemset(d_out2, 0xff, n_out));
        cuda_kv_map map = {d_pos, d_tables, d_tab, bs, 1};
        CK(cuda_attention_run(kind_each, dt, d_out2, d_qkv, d_k, d_v, map, T, C, NH, maxlen, scale, d_scratch,
                              d_tickets, g_st));
        download(out2, d_out2, n_out);
        solo_differ = count_changed(out2, out, n_out);
        CK(cudaFree(d_out2));
        free(out2);
    }
    /* The tensor-core kernel's fresh path (cuda_kv_map.fresh): the pass's
     * q, k, v in fp16 rows of 3C, the pass's own cache rows garbage; the
     * kernel must give the same bits and write those rows. */
    size_t fresh_out = 0, fresh_cache = 0;
    int fresh_run = !each && kind_run == CUDA_ATT_MMA && dt != GPTC_DTYPE_F32;
    if (fresh_run) {
        unsigned char *q16 = (unsigned char *)xmalloc((size_t)T * 3 * C * d->es);
        unsigned char *kg = (unsigned char *)xmalloc(rows * C * d->es);
        unsigned char *vg = (unsigned char *)xmalloc(rows * C * d->es);
        memcpy(kg, kp, rows * C * d->es);
        memcpy(vg, vp, rows * C * d->es);
        for (int t = 0; t < T; t++) {
            int s = t / nq;
            for (int k = 0; k < C; k++) {
                put(dt, q16, (size_t)t * 3 * C + k, qkv[(size_t)t * 3 * C + k]);
                put(dt, q16, (size_t)t * 3 * C + C + k, kf[s][(size_t)pos[t] * C + k]);
                put(dt, q16, (size_t)t * 3 * C + 2 * C + k, vf[s][(size_t)pos[t] * C + k]);
            }
            size_t r = (size_t)perm[off[s] + pos[t] / bs] * bs + pos[t] % bs;
            memset(kg + r * C * d->es, 0xff, (size_t)C * d->es);
            memset(vg + r * C * d->es, 0xff, (size_t)C * d->es);
        }
        void *d_q16 = dupload(q16, (size_t)T * 3 * C * d->es);
        void *d_kg = dupload(kg, rows * C * d->es), *d_vg = dupload(vg, rows * C * d->es);
        void *d_o2 = dalloc(n_out);
        CK(cudaMemset(d_o2, 0xff, n_out));
        for (int s = 0; s < ns; s++) {
            size_t t0 = (size_t)s * nq;
            cuda_kv_map map = {d_pos + t0, d_tables, d_tab + t0, bs, 0, (const char *)d_q16 + t0 * 3 * C * d->es};
            CK(cuda_attention_run(kind_run, dt, (char *)d_o2 + t0 * C * d->es, d_qkv + t0 * 3 * C, d_kg, d_vg,
                                  map, nq, C, NH, len[s], scale, d_scratch, d_tickets, g_st));
        }
        unsigned char *o2 = (unsigned char *)xmalloc(n_out);
        download(o2, d_o2, n_out);
        download(kg, d_kg, rows * C * d->es);
        download(vg, d_vg, rows * C * d->es);
        fresh_out = count_changed(o2, out, n_out);
        fresh_cache = count_changed(kg, kp, rows * C * d->es) + count_changed(vg, vp, rows * C * d->es);
        CK(cudaFree(d_q16));
        CK(cudaFree(d_kg));
        CK(cudaFree(d_vg));
        CK(cudaFree(d_o2));
        free(q16), free(kg), free(vg), free(o2);
    }
    int *tickets = (int *)xmalloc(n_tickets * sizeof(int));
    download(tickets, d_tickets, n_tickets * sizeof(int));
    size_t nz = 0;
    for (size_t i = 0; i < n_tickets; i++) nz += tickets[i] != 0;

    err_t e = {0, 0};
    double *p = (double *)xmalloc((size_t)maxlen * sizeof(double));
    for (int t = 0; t < T; t++) {
        int s = t / nq, Lt = pos[t] + 1;
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)t * 3 * C + (size_t)h * D;
            double m = -INFINITY, sum = 0;
            for (int j = 0; j < Lt; j++) {
                double sc = 0;
                for (int k = 0; k < D; k++) sc += (double)q[k] * kf[s][(size_t)j * C + (size_t)h * D + k];
                p[j] = sc * scale;
                m = fmax(m, p[j]);
            }
            for (int j = 0; j < Lt; j++) sum += (p[j] = exp(p[j] - m));
            for (int k = 0; k < D; k++) {
                double o = 0;
                for (int j = 0; j < Lt; j++) o += p[j] * vf[s][(size_t)j * C + (size_t)h * D + k];
                err_add(&e, get(dt, out, (size_t)t * C + (size_t)h * D + k), o / sum);
            }
        }
    }
    /* The same queries through cuda_attention on a contiguous cache, one
     * sequence at a time, where it picks the same kernel. */
    size_t differ = 0;
    int compared = 0;
    if (cuda_attention_kind(dt, nq, C, NH) == (each ? kind_each : kind_run)) {
        int ml = maxlen;
        size_t n_cache = (size_t)ml * C * d->es;
        unsigned char *kc = (unsigned char *)xmalloc(n_cache), *vc = (unsigned char *)xmalloc(n_cache);
        unsigned char *o1 = (unsigned char *)xmalloc((size_t)nq * C * d->es);
        void *d_kc = dalloc(n_cache), *d_vc = dalloc(n_cache), *d_o1 = dalloc((size_t)nq * C * d->es);
        float *d_sc1 = (float *)dalloc(cuda_attention_scratch_floats(NH, D, ml) * sizeof(float));
        int *d_tk1 = (int *)dalloc((size_t)NH * ATT_SPLIT_MAXT * sizeof(int));
        int32_t *d_p1 = (int32_t *)dalloc(sizeof(int32_t));
        CK(cudaMemset(d_tk1, 0, (size_t)NH * ATT_SPLIT_MAXT * sizeof(int)));
        for (int s = 0; s < ns; s++) {
            memset(kc, 0xff, n_cache);
            memset(vc, 0xff, n_cache);
            for (int j = 0; j < len[s]; j++) {
                size_t r = (size_t)perm[off[s] + j / bs] * bs + j % bs;
                memcpy(kc + (size_t)j * C * d->es, kp + r * C * d->es, (size_t)C * d->es);
                memcpy(vc + (size_t)j * C * d->es, vp + r * C * d->es, (size_t)C * d->es);
            }
            CK(cudaMemcpy(d_kc, kc, n_cache, cudaMemcpyHostToDevice));
            CK(cudaMemcpy(d_vc, vc, n_cache, cudaMemcpyHostToDevice));
            int32_t p0 = len[s] - nq;
            CK(cudaMemcpy(d_p1, &p0, sizeof p0, cudaMemcpyHostToDevice));
            CK(cuda_attention(dt, d_o1, d_qkv + (size_t)s * nq * 3 * C, d_kc, d_vc, d_p1, nq, C, NH, ml, scale,
                              d_sc1, d_tk1, g_st));
            download(o1, d_o1, (size_t)nq * C * d->es);
            differ += count_changed(o1, out + (size_t)s * nq * C * d->es, (size_t)nq * C * d->es);
        }
        compared = 1;
        CK(cudaFree(d_kc));
        CK(cudaFree(d_vc));
        CK(cudaFree(d_o1));
        CK(cudaFree(d_sc1));
        CK(cudaFree(d_tk1));
        CK(cudaFree(d_p1));
        free(kc), free(vc), free(o1);
    }
    report r;
    rep_init(&r);
    int mma = !each && kind_run == CUDA_ATT_MMA;
    rep_err(&r, "out", err_rel(&e), 1e-5 + (mma ? 6 : 2) * d->u);
    rep_exact(&r, "tickets", nz);
    if (compared) rep_exact(&r, "= contiguous", differ);
    if (solo_run) rep_exact(&r, "solo = not", solo_differ);
    if (fresh_run) {
        rep_exact(&r, "fresh = not", fresh_out);
        rep_exact(&r, "fresh cache", fresh_cache);
    }
    rep_end(&r, label);
    CK(cudaFree(d_qkv));
    CK(cudaFree(d_k));
    CK(cudaFree(d_v));
    CK(cudaFree(d_tables));
    CK(cudaFree(d_pos));
    CK(cudaFree(d_tab));
    CK(cudaFree(d_out));
    CK(cudaFree(d_scratch));
    CK(cudaFree(d_tickets));
    for (int s = 0; s < ns; s++) free(kf[s]), free(vf[s]);
    free(perm), free(kp), free(vp), free(qkv), free(pos), free(tab), free(out), free(tickets), free(p);
}

/* ---- argmax, set_int ---- */

/* Lowest index of the largest non-NaN value; 0 when every value is NaN. */
static int32_t argmax_ref(const float *x, int V) {
    int b = -1;
    for (int i = 0; i < V; i++)
        if (!isnan(x[i]) && (b < 0 || x[i] > x[b])) b = i;
    return b < 0 ? 0 : b;
}

enum { AM_RANDOM, AM_TIE_THREAD, AM_TIE_LANES, AM_TIE_BLOCKS, AM_EQUAL, AM_NAN, AM_ALL_NAN, AM_ALL_NEG_INF, AM_LAST };
static const char *AM_NAMES[] = {"random",    "tie in one thread", "tie across lanes", "tie across blocks",
                                 "all equal", "NaNs",              "all NaN",          "all -inf",
                                 "max last"};

/* V logits of case `kind`: uniform in [-10, 10), then the case's values. */
static void am_fill(float *x, int V, int kind) {
    for (int i = 0; i < V; i++) x[i] = uni(-10, 10);
    switch (kind) {
    /* The first stage's 256 blocks of 256 threads stride by 65536: a tie
     * within one thread's stride, between lanes of a warp, and between
     * blocks (the second stage), the lowest index put where a reduction
     * order would meet it last. */
    case AM_TIE_THREAD: /* V > 70000 */
        x[4464 + 65536] = x[4464] = 11.0f;
        break;
    case AM_TIE_LANES: x[301] = x[300] = 11.0f; break;
    case AM_TIE_BLOCKS: x[V - 1] = x[40000 % V] = x[513] = 11.0f; break;
    case AM_EQUAL:
        for (int i = 0; i < V; i++) x[i] = 1.5f;
        break;
    case AM_NAN:
        for (int i = 0; i < V; i += 7) x[i] = NAN;
        for (int i = 3; i < V; i += 11) x[i] = -INFINITY;
        x[V / 2] = 12.0f; /* NaN at 0 and every 7th: none of them may win */
        break;
    case AM_ALL_NAN:
        for (int i = 0; i < V; i++) x[i] = NAN;
        break;
    case AM_ALL_NEG_INF:
        for (int i = 0; i < V; i++) x[i] = -INFINITY;
        break;
    case AM_LAST: x[V - 1] = 10.5f; break;
    }
}

/* A plain store of a product's outputs to out (rows of ldo). */
static cuda_epi store_epi(void *out, int ldo) {
    cuda_epi e;
    memset(&e, 0, sizeof e);
    e.mode = EPI_STORE;
    e.out = out;
    e.ldo = ldo;
    return e;
}

/* cuda_argmax_rows (a batch pass's greedy picks): n rows of V logits in
 * one buffer, so that rows start at every offset from a 16-byte boundary
 * (the kernel's scalar prefix, float4s and tail); row r takes case r % 9:
 * random, ties in the prefix (0, 1), in the tail (V - 2, V - 1) and three
 * apart, then am_fill's all equal, NaNs, all NaN, all -inf, max last. */
static void test_argmax_rows(int V, int n) {
    char label[128];
    snprintf(label, sizeof label, "argmax rows V=%d n=%d", V, n);
    reseed(label);
    float *x = (float *)xmalloc((size_t)V * n * sizeof(float));
    int32_t *want = (int32_t *)xmalloc((size_t)n * sizeof(int32_t)), *got = (int32_t *)xmalloc((size_t)n * sizeof(int32_t));
    for (int r = 0; r < n; r++) {
        static const int KIND[9] = {AM_RANDOM, AM_RANDOM, AM_RANDOM, AM_RANDOM, AM_EQUAL,
                                    AM_NAN,    AM_ALL_NAN, AM_ALL_NEG_INF, AM_LAST};
        float *y = x + (size_t)r * V;
        am_fill(y, V, KIND[r % 9]);
        switch (r % 9) {
        case 1: y[0] = y[V > 1 ? 1 : 0] = 11.0f; break;
        case 2: y[V - 1] = y[V > 1 ? V - 2 : 0] = 11.0f; break;
        case 3: y[V - 1] = y[V / 2] = y[V / 3] = 11.0f; break;
        }
        want[r] = argmax_ref(y, V);
        got[r] = -1;
    }
    float *d_x = (float *)dupload(x, (size_t)V * n * sizeof(float));
    int32_t *d_out = (int32_t *)dupload(got, (size_t)n * sizeof(int32_t));
    CK(cuda_argmax_rows(d_x, V, n, d_out, g_st));
    download(got, d_out, (size_t)n * sizeof(int32_t));
    size_t wrong = 0;
    int first = -1;
    for (int r = 0; r < n; r++)
        if (got[r] != want[r]) wrong++, first = first < 0 ? r : first;
    report rr;
    rep_init(&rr);
    rep_exact(&rr, "picks", wrong);
    if (first >= 0) rep_add(&rr, " (row %d: %d, expected %d)", first, got[first], want[first]);
    rep_end(&rr, label);
    CK(cudaFree(d_x));
    CK(cudaFree(d_out));
    free(x);
    free(want);
    free(got);
}

/* The pick by the argmax kernel (d NULL), or by the LM head's product as it
 * stores the logits (cuda_fuse.pick, dtype d): a product whose row o is x[o]
 * at column k0 and zeros elsewhere, times the one-hot row e_k0, stores x[o]
 * exactly (NaN and -inf included), so both pick from the same values. */
static void test_argmax(int V, int kind, const dtype_info *d = NULL, int I = 72) {
    char label[128];
    if (d) snprintf(label, sizeof label, "head pick %-4s V=%d I=%d %s", d->name, V, I, AM_NAMES[kind]);
    else snprintf(label, sizeof label, "argmax   V=%d %s", V, AM_NAMES[kind]);
    reseed(label);
    float *x = (float *)xmalloc((size_t)V * sizeof(float));
    am_fill(x, V, kind);
    /* the head's products: the values in its dtype, the weights and input */
    void *d_w = NULL, *d_in = NULL;
    int ldw = cuda_pad_row(I), k0 = I / 2 + 1;
    if (d) {
        unsigned char *w = (unsigned char *)xcalloc((size_t)V * ldw, d->es);
        for (int o = 0; o < V; o++) {
            put(d->dt, w, (size_t)o * ldw + k0, x[o]);
            x[o] = get(d->dt, w, (size_t)o * ldw + k0);
        }
        d_w = dupload(w, (size_t)V * ldw * d->es);
        free(w);
        unsigned char *in = (unsigned char *)xcalloc((size_t)I, d->es);
        put(d->dt, in, (size_t)k0, 1.0f);
        d_in = dupload(in, (size_t)I * d->es);
        free(in);
    }
    int32_t pos0 = (int32_t)(rnd64() % 1000), tok0 = -12345;
    float *d_x = (float *)dupload(x, (size_t)V * sizeof(float));
    /* the head's grid: at most a block a 4 rows */
    size_t parts = (size_t)(V + 3) / 4 > CUDA_ARGMAX_PARTS ? (size_t)(V + 3) / 4 : CUDA_ARGMAX_PARTS;
    float *d_pv = (float *)dalloc(parts * sizeof(float));
    int32_t *d_pi = (int32_t *)dalloc(parts * sizeof(int32_t));
    int32_t *d_tok = (int32_t *)dupload(&tok0, sizeof tok0), *d_pos = (int32_t *)dupload(&pos0, sizeof pos0);
    int zero = 0;
    int *d_ticket = (int *)dupload(&zero, sizeof zero);
    /* The token ring (a session's is mapped host memory; the kernel only
     * writes through the pointer): the token of position p at [p & 3]. */
    int32_t ring0[4] = {-7, -7, -7, -7}, ring[4];
    int32_t *d_ring = (int32_t *)dupload(ring0, sizeof ring0);
    /* Twice: the last block leaves the ticket at zero for the next call.
     * The second time as a batch pass picks: no position to advance. */
    int32_t tok[2], pos[2];
    int ticket;
    cuda_pick pk = {d_pv, d_pi, d_ticket, d_tok, d_pos, d_ring, 3};
    size_t stored_wrong = 0;
    for (int k = 0; k < 2; k++) {
        if (k == 1) pk.pos = NULL;
        if (d) {
            /* the logits' room pre-filled with NaN: every value must be stored */
            float *d_out = (float *)dalloc((size_t)V * sizeof(float));
            CK(cudaMemset(d_out, 0xff, (size_t)V * sizeof(float)));
            cuda_epi e = store_epi(d_out, V);
            cuda_fuse f;
            memset(&f, 0, sizeof f);
            f.pick = pk;
            CK(cuda_gemv(d->dt, d_in, d_w, ldw, 1, I, V, e, g_st, &f));
            float *got = (float *)xmalloc((size_t)V * sizeof(float));
            download(got, d_out, (size_t)V * sizeof(float));
            for (int o = 0; o < V; o++)
                stored_wrong += isnan(x[o]) ? !isnan(got[o]) : memcmp(&got[o], &x[o], sizeof(float)) != 0;
            free(got);
            CK(cudaFree(d_out));
        } else {
            CK(cuda_argmax(d_x, V, pk, g_st));
        }
        download(&tok[k], d_tok, sizeof tok[k]);
        download(&pos[k], d_pos, sizeof pos[k]);
    }
    download(&ticket, d_ticket, sizeof ticket);
    download(ring, d_ring, sizeof ring);
    int32_t want = argmax_ref(x, V);
    report r;
    rep_init(&r);
    if (tok[0] != want || tok[1] != want) r.ok = 0;
    rep_add(&r, "token %d, %d (expected %d)", tok[0], tok[1], want);
    if (pos[0] != pos0 + 1 || pos[1] != pos0 + 1 || ticket != 0) r.ok = 0;
    rep_add(&r, ", pos %d -> %d -> %d, ticket %d", pos0, pos[0], pos[1], ticket);
    int r1 = (pos0 + 1) & 3, untouched = 1;
    for (int k = 0; k < 4; k++)
        if (k != r1 && ring[k] != -7) untouched = 0;
    if (ring[r1] != want || !untouched) r.ok = 0;
    rep_add(&r, ", ring [%d] %d", r1, ring[r1]);
    if (d) rep_exact(&r, ", logits", stored_wrong);
    rep_end(&r, label);
    if (d) CK(cudaFree(d_w)), CK(cudaFree(d_in));
    CK(cudaFree(d_ring));
    CK(cudaFree(d_ticket));
    CK(cudaFree(d_x));
    CK(cudaFree(d_pv));
    CK(cudaFree(d_pi));
    CK(cudaFree(d_tok));
    CK(cudaFree(d_pos));
    free(x);
}

/* A cuda_fuse where no kernel can take it: an error, not a launch that
 * ignores it. */
static void test_pick_refused(void) {
    report r;
    rep_init(&r);
    int I = 64, O = 40;
    void *d_w = dalloc((size_t)O * I * 4), *d_in = dalloc((size_t)2 * I * 4);
    float *d_out = (float *)dalloc((size_t)2 * O * 4);
    int *d_ticket = (int *)dalloc(sizeof(int));
    CK(cudaMemset(d_w, 0, (size_t)O * I * 4));
    CK(cudaMemset(d_in, 0, (size_t)2 * I * 4));
    CK(cudaMemset(d_ticket, 0, sizeof(int)));
    cuda_epi e = store_epi(d_out, O);
    cuda_fuse f;
    memset(&f, 0, sizeof f);
    f.pick.ticket = d_ticket;
    cudaError_t f32 = cuda_gemv(GPTC_DTYPE_F32, d_in, d_w, I, 1, I, O, e, g_st, &f);
    cudaError_t two = cuda_gemv(GPTC_DTYPE_F16, d_in, d_w, I, 2, I, O, e, g_st, &f);
    memset(&f, 0, sizeof f);
    f.emb.wte = d_w;
    cudaError_t noln = cuda_gemv(GPTC_DTYPE_F16, d_in, d_w, I, 1, I, O, e, g_st, &f);
    (void)cudaGetLastError();
    if (f32 != cudaErrorNotSupported || two != cudaErrorNotSupported || noln != cudaErrorNotSupported ||
        cuda_gemv_fuses(GPTC_DTYPE_F32))
        r.ok = 0;
    rep_add(&r, "fp32: %s, two tokens: %s, embedding without a layer norm: %s", cudaGetErrorName(f32),
            cudaGetErrorName(two), cudaGetErrorName(noln));
    rep_end(&r, "head pick refused");
    CK(cudaFree(d_w)), CK(cudaFree(d_in)), CK(cudaFree(d_out)), CK(cudaFree(d_ticket));
}

/* The embedding computed inside a one-token layer-norm product (cuda_fuse)
 * against cuda_embed then the same product: the residual row and the
 * outputs, bit for bit. */
static void test_embed_fused(const dtype_info *d, int C, int O) {
    char label[128];
    snprintf(label, sizeof label, "embed+ln_gemv %-4s C=%d O=%d", d->name, C, O);
    reseed(label);
    const int V = 300, NP = 64;
    int ldw = cuda_pad_row(C);
    unsigned char *wte = (unsigned char *)xcalloc((size_t)V * ldw, d->es);
    unsigned char *w = (unsigned char *)xcalloc((size_t)O * ldw, d->es);
    for (int r = 0; r < V; r++)
        for (int c = 0; c < C; c++) put(d->dt, wte, (size_t)r * ldw + c, uni(-1, 1));
    for (int r = 0; r < O; r++)
        for (int c = 0; c < C; c++) put(d->dt, w, (size_t)r * ldw + c, uni(-0.1, 0.1));
    float *wpe = (float *)xmalloc((size_t)NP * C * sizeof(float));
    float *lw = (float *)xmalloc((size_t)C * 4), *lb = (float *)xmalloc((size_t)C * 4);
    float *bias = (float *)xmalloc((size_t)O * 4);
    for (size_t i = 0; i < (size_t)NP * C; i++) wpe[i] = uni(-0.5, 0.5);
    for (int i = 0; i < C; i++) lw[i] = uni(0.5, 1.5), lb[i] = uni(-0.2, 0.2);
    for (int i = 0; i < O; i++) bias[i] = uni(-0.2, 0.2);
    int32_t id = (int32_t)(rnd64() % V), pos = (int32_t)(rnd64() % NP);
    void *d_wte = dupload(wte, (size_t)V * ldw * d->es), *d_w = dupload(w, (size_t)O * ldw * d->es);
    float *d_wpe = (float *)dupload(wpe, (size_t)NP * C * 4), *d_lw = (float *)dupload(lw, (size_t)C * 4);
    float *d_lb = (float *)dupload(lb, (size_t)C * 4), *d_bias = (float *)dupload(bias, (size_t)O * 4);
    int32_t *d_id = (int32_t *)dupload(&id, sizeof id), *d_pos = (int32_t *)dupload(&pos, sizeof pos);
    float *d_x[2], *d_out[2];
    float *x[2], *out[2];
    for (int k = 0; k < 2; k++) {
        d_x[k] = (float *)dalloc((size_t)C * 4);
        d_out[k] = (float *)dalloc((size_t)O * 4);
        CK(cudaMemset(d_x[k], 0xff, (size_t)C * 4));
        CK(cudaMemset(d_out[k], 0xff, (size_t)O * 4));
        cuda_epi e = store_epi(d_out[k], O);
        e.bias = d_bias;
        cuda_fuse f;
        memset(&f, 0, sizeof f);
        if (k == 0) {
            CK(cuda_embed(d->dt, d_x[k], d_wte, ldw, d_wpe, d_id, d_pos, 1, C, g_st));
        } else {
            cuda_embed_src m = {d_wte, d_wpe, d_id, d_pos, ldw, d_x[k]};
            f.emb = m;
        }
        CK(cuda_gemv_ln(d->dt, d_x[k], d_lw, d_lb, 1e-5f, d_w, ldw, 1, C, O, e, NULL, g_st, k ? &f : NULL));
        x[k] = (float *)xmalloc((size_t)C * 4);
        out[k] = (float *)xmalloc((size_t)O * 4);
        download(x[k], d_x[k], (size_t)C * 4);
        download(out[k], d_out[k], (size_t)O * 4);
    }
    report r;
    rep_init(&r);
    rep_exact(&r, "x", count_changed(x[0], x[1], (size_t)C * 4));
    rep_exact(&r, "outputs", count_changed(out[0], out[1], (size_t)O * 4));
    rep_end(&r, label);
    for (int k = 0; k < 2; k++) CK(cudaFree(d_x[k])), CK(cudaFree(d_out[k])), free(x[k]), free(out[k]);
    CK(cudaFree(d_wte)), CK(cudaFree(d_w)), CK(cudaFree(d_wpe)), CK(cudaFree(d_lw)), CK(cudaFree(d_lb));
    CK(cudaFree(d_bias)), CK(cudaFree(d_id)), CK(cudaFree(d_pos));
    free(wte), free(w), free(wpe), free(lw), free(lb), free(bias);
}

static void test_set_int(void) {
    const int32_t vals[] = {0, -1, 123456789, INT32_MIN, INT32_MAX};
    int n = (int)(sizeof vals / sizeof vals[0]);
    int32_t *d_p = (int32_t *)dalloc(2 * sizeof(int32_t));
    size_t wrong = 0;
    for (int k = 0; k < n; k++) {
        CK(cudaMemset(d_p, 0x5a, 2 * sizeof(int32_t)));
        CK(cuda_set_int(d_p, vals[k], g_st));
        int32_t got[2], guard;
        memset(&guard, 0x5a, sizeof guard);
        download(got, d_p, sizeof got);
        wrong += got[0] != vals[k] || got[1] != guard;
    }
    report r;
    rep_init(&r);
    rep_exact(&r, "values and the next word", wrong);
    rep_end(&r, "set_int");
    CK(cudaFree(d_p));
}

/* ---- main ---- */

typedef struct {
    int I, O, all_acts_T, quick;
} gemv_size;
static const gemv_size GEMV_SIZES[] = {
    {37, 53, 3, 1},      /* odd everything; all activations */
    {768, 2304, 0, 1},   /* GPT-2 small's QKV */
    {1600, 6400, 1, 0},  /* GPT-2 XL's FC; all activations */
    {3072, 768, 0, 0},   /* GPT-2 small's MLP projection (QKV mode as C = 256) */
    {1000, 50257, 0, 0}, /* a vocabulary-sized head */
    {5004, 129, 0, 1},   /* I % 8 == 4; gemv_ln past 48 KiB of shared memory */
    {20001, 33, 0, 0},   /* gemv past 48 KiB of shared memory */
};

int main(int argc, char **argv) {
    int seeded = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            g_quick = 1;
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            g_seed = strtoull(argv[++i], &end, 10);
            if (*end || end == argv[i]) {
                fprintf(stderr, "test_kernels: --seed takes a number, not '%s'\n", argv[i]);
                return 2;
            }
            seeded = 1;
        } else {
            fprintf(stderr, "usage: test_kernels [--seed N] [--quick]\n");
            return 2;
        }
    }
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        g_seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
        g_seed %= 1000000007u; /* short enough to type back */
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int dev;
    cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    g_smem_optin = prop.sharedMemPerBlockOptin;
    printf("# test_kernels on %s (sm_%d%d), seed %llu%s: replay with --seed %llu\n", prop.name, prop.major,
           prop.minor, (unsigned long long)g_seed, g_quick ? ", --quick" : "", (unsigned long long)g_seed);
    CK(cudaStreamCreate(&g_st));
    /* The largest rows of the run: gemv's 20001, gemv_ln's 6400 (the "= alone" cases). */
    CK(cuda_gemv_prepare(cuda_pad_row(20001), cuda_pad_row(6400)));

    test_set_int();
    for (int di = 0; di < 3; di++) {
        const dtype_info *d = &DTYPES[di];
        const size_t ns[] = {1, 37, 100003, (size_t)65535 * 256 + 1001}; /* the last past the grid cap */
        for (int k = 0; k < 4; k++)
            if (!g_quick || k < 3) test_convert(d, ns[k]);
        const int Cs[] = {37, 768, 1601};
        for (int k = 0; k < 3; k++) {
            if (g_quick && k == 1) continue;
            test_embed(d, Cs[k], 7, 1000);
            if (g_quick) continue;
            test_embed(d, Cs[k], 1, 0);
            test_embed(d, Cs[k], 20, 1004); /* up to the last position */
            test_layernorm(d, Cs[k], 1);
        }
        for (int k = 0; k < 3; k++)
            if (!g_quick || k != 1) test_layernorm(d, Cs[k], 5);
        /* the warp-per-row kernel: C = 4k at both register sizes, a partial last block */
        test_layernorm(d, 1600, 37);
        if (!g_quick) test_layernorm(d, 2048, 6), test_layernorm(d, 1024, 3), test_layernorm(d, 2052, 2);
    }
    for (int di = 0; di < 3; di++)
        for (size_t k = 0; k < sizeof GEMV_SIZES / sizeof GEMV_SIZES[0]; k++)
            if (!g_quick || GEMV_SIZES[k].quick)
                test_gemv(&DTYPES[di], GEMV_SIZES[k].I, GEMV_SIZES[k].O, GEMV_SIZES[k].all_acts_T);
    for (int di = 0; di < 3; di++) {
        test_gemv_invariance(&DTYPES[di], 37, 51, 41);
        test_gemv_invariance(&DTYPES[di], 768, 2304, 41);
        test_gemv_invariance(&DTYPES[di], 768, 2304, 29);
        /* 2-32 tokens take the pipelined product (gemv_pipe_kernel, 16 a
         * block: 29 above is two groups): one tile, two, rows of 8
         * (gpt2-xl's proj at 5: its 1600 rows in 200 units), the MLP
         * projection's 3072; 41 takes gemv_mma_kernel */
        test_gemv_invariance(&DTYPES[di], 768, 2304, 13);
        test_gemv_invariance(&DTYPES[di], 1600, 1600, 5);
        /* The pipe's own layer norm (gemv_pipe_ln_kernel, one group of up
         * to 64 KB of rows up to 1280 wide: 13 tokens of 768 above, 16 of
         * 1024, 12 of 1280; 5 of 1600 too wide): rows not a multiple of 8
         * (100) or of 4 (37: ln_stage_kernel then); gpt2-medium's 32 tokens
         * (two groups) and gpt2-large's 16, too many bytes a block
         * (ln_stage_kernel; the pipe's under GPTC_GEMV_PIPE_LN=1000
         * GPTC_GEMV_PIPE_LN_I=2048 in batch_check.sh, with 1600 wide) */
        test_gemv_invariance(&DTYPES[di], 100, 300, 7);
        test_gemv_invariance(&DTYPES[di], 37, 51, 9);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1024, 3072, 16);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1280, 3840, 12);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1024, 3072, 32);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1280, 3840, 16);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 3072, 768, 11);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1600, 6402, 16);
        /* gpt2-xl's MLP projection: 13 and 29 tokens do not fit the pipe
         * (the K split over a cluster, gemv_ksplit_kernel; with
         * GPTC_GEMV_KSPLIT=0 gemv_mma_kernel) */
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 6400, 1600, 13);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 6400, 1600, 29);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 3072, 768, 41);
        /* gpt2-xl's width: 32 tokens a block take two slabs of rows (O odd:
         * the last slab partly past O) */
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1600, 1203, 41);
        /* gpt2-xl's FC width: more row blocks than 2 an SM take the layer-norm
         * product of 4 blocks an SM (4 loads a lane) alone, not in a batch */
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1600, 6402, 41);
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 1600, 6402, 29);
        /* a head's many rows (GPTC_GEMV_PIPE_WIDE): 27 tokens in one group
         * of four tiles, not two groups */
        if (!g_quick) test_gemv_invariance(&DTYPES[di], 768, 16411, 27);
    }
    for (int di = 0; di < 3; di++) {
        const int Os[] = {53, 111, 2304, 50257};
        for (int k = 0; k < 4; k++)
            if (!g_quick || k < 2) test_epilogue(&DTYPES[di], Os[k]);
    }
    for (int di = 0; di < 3; di++)
        for (size_t k = 0; k < sizeof ATT_CASES / sizeof ATT_CASES[0]; k++)
            if (!g_quick || ATT_CASES[k].quick) test_attention(&DTYPES[di], &ATT_CASES[k]);
    for (int di = 0; di < 3; di++)
        for (size_t k = 0; k < sizeof PAGED_CASES / sizeof PAGED_CASES[0]; k++)
            for (int each = 0; each < 2; each++)
                if (!g_quick || PAGED_CASES[k].quick) test_paged_attention(&DTYPES[di], &PAGED_CASES[k], each);
    const int Vs[] = {1, 37, 256, 257, 50257, 100003};
    for (int k = 0; k < 6; k++) test_argmax(Vs[k], AM_RANDOM);
    for (int kind = AM_TIE_THREAD; kind <= AM_LAST; kind++) {
        if (kind != AM_TIE_THREAD) test_argmax(50257, kind);
        if (!g_quick || kind == AM_TIE_THREAD) test_argmax(100003, kind);
    }
    test_argmax(1, AM_ALL_NAN);
    const int Vr[][2] = {{1, 3}, {2, 5}, {37, 9}, {50257, 36}, {100003, 9}};
    for (int k = 0; k < 5; k++) test_argmax_rows(Vr[k][0], Vr[k][1]);
    /* The same picks inside the LM head's product (16-bit dtypes): ties
     * within a row block's 16 rows (300, 301), across blocks and row blocks
     * of one block, NaN and -inf; gpt2's head at I = 768. */
    for (int di = 1; di < 3; di++) {
        const int Vh[] = {37, 257, 1500, 50257}; /* blocks of 4, 4, 8 and 16 rows */
        for (int k = 0; k < 4; k++) test_argmax(Vh[k], AM_RANDOM, &DTYPES[di]);
        test_argmax(50257, AM_RANDOM, &DTYPES[di], 768);
        for (int kind = AM_TIE_THREAD; kind <= AM_LAST; kind++) {
            if (kind != AM_TIE_THREAD) test_argmax(50257, kind, &DTYPES[di]);
            if (!g_quick || kind == AM_TIE_THREAD) test_argmax(100003, kind, &DTYPES[di]);
        }
    }
    /* and refused where the kernel cannot: fp32, or more than one token */
    test_pick_refused();
    for (int di = 1; di < 3; di++) {
        /* the embedding inside the first QKV product: gpt2's, gpt2-xl's (the
         * layer-norm product of 4 blocks an SM), an odd width */
        test_embed_fused(&DTYPES[di], 768, 2304);
        test_embed_fused(&DTYPES[di], 1600, 4800);
        test_embed_fused(&DTYPES[di], 37, 51);
        if (!g_quick) test_embed_fused(&DTYPES[di], 1024, 3072);
    }

    CK(cudaStreamDestroy(g_st));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("# %d cases, %d failed, %.1f s (seed %llu)\n", g_cases, g_failed,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           (unsigned long long)g_seed);
    return g_failed ? 1 : 0;
}
