/*
 * kernels.c - fp32 CPU kernels.
 *
 * The matrix product is the only kernel that matters for speed: in decode it
 * streams every weight once per token (memory bound), in prefill it reuses each
 * weight tile across many tokens (compute bound). Weights are [out][in], so
 * both cases are dot products along contiguous rows: decode splits the output
 * rows across threads and streams them front to back; prefill computes 3x4
 * tiles of (token, output) so each loaded vector feeds three or four FMAs.
 * GCC/Clang vector extensions give 8-wide SIMD without intrinsics, so the same
 * code builds for AVX2, AVX-512 or NEON (as two 4-wide halves).
 */
#include "kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Vector values only pass between static functions of this file, which are
 * inlined: no ABI is involved, so the note that AVX changes how they would
 * be passed (builds without -march=native) does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum8(const v8 *p) {
    const v8 v = *p;
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

void cpu_layernorm(float *out, const float *inp, const float *w, const float *b, int T, int C,
                   float eps) {
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        float mean = 0, var = 0;
        for (int i = 0; i < C; i++) mean += x[i];
        mean /= (float)C;
        for (int i = 0; i < C; i++) {
            float d = x[i] - mean;
            var += d * d;
        }
        var /= (float)C;
        float rstd = 1.0f / sqrtf(var + eps);
        for (int i = 0; i < C; i++) o[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/* One token against 4 output rows. Every output element, here and in
 * dot_3x4, is summed in one order: lane j of one 8-wide accumulator takes
 * elements j, j + 8, j + 16, ... in turn, then the lanes are added, then the
 * tail and the bias. So a token's result does not depend on which kernel,
 * or which other tokens of a batch, it was computed with: batched generation
 * gives the same tokens as one prompt at a time. In decode the cost is one
 * pass over the weights (memory bound); 4 rows keep 4 independent chains of
 * adds, more than the memory system can feed. Rows at or past O are clamped
 * and not stored. */
static void dot_1x4(float *out, const float *x, const float *w, const float *bias, int I, int o0,
                    int O) {
    const float *r[4];
    for (int k = 0; k < 4; k++) r[k] = w + (size_t)(o0 + k < O ? o0 + k : O - 1) * I;
    v8 acc[4];
    memset(acc, 0, sizeof acc);
    int i = 0;
    for (; i + 16 <= I; i += 16) {
        v8 x0 = load8(x + i), x1 = load8(x + i + 8);
        for (int k = 0; k < 4; k++) {
            acc[k] += x0 * load8(r[k] + i);
            acc[k] += x1 * load8(r[k] + i + 8);
        }
    }
    for (; i + 8 <= I; i += 8) {
        v8 x0 = load8(x + i);
        for (int k = 0; k < 4; k++) acc[k] += x0 * load8(r[k] + i);
    }
    for (int k = 0; k < 4 && o0 + k < O; k++) {
        float s = hsum8(&acc[k]);
        for (int j = i; j < I; j++) s += x[j] * r[k][j];
        out[o0 + k] = s + (bias ? bias[o0 + k] : 0.0f);
    }
}

/* Three tokens against four output rows: 12 accumulators plus 3 token
 * vectors and 1 weight vector fill the 16 registers of AVX2 exactly (a 4x4
 * tile spills). Out rows are `ostride` apart; rows at or past O are clamped
 * and not stored. */
static void dot_3x4(float *out, size_t ostride, const float *x, const float *w, const float *bias,
                    int I, int O, int o0) {
    const float *r[4];
    for (int k = 0; k < 4; k++) r[k] = w + (size_t)(o0 + k < O ? o0 + k : O - 1) * I;
    v8 acc[3][4];
    memset(acc, 0, sizeof acc);
    int i = 0;
    for (; i + 8 <= I; i += 8) {
        v8 xv[3];
        for (int t = 0; t < 3; t++) xv[t] = load8(x + (size_t)t * I + i);
        for (int k = 0; k < 4; k++) {
            v8 wv = load8(r[k] + i);
            for (int t = 0; t < 3; t++) acc[t][k] += xv[t] * wv;
        }
    }
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 4 && o0 + k < O; k++) {
            float s = hsum8(&acc[t][k]);
            for (int j = i; j < I; j++) s += x[(size_t)t * I + j] * r[k][j];
            out[(size_t)t * ostride + o0 + k] = s + (bias ? bias[o0 + k] : 0.0f);
        }
}

/* Below this many multiply-adds a kernel runs on one thread: waking a team
 * costs more than the work (and much more when the cores are oversubscribed). */
#define PAR_MIN_WORK (1u << 17)

void cpu_matmul(float *out, const float *inp, const float *w, const float *bias, int T, int I, int O,
                int n_threads) {
    if ((size_t)T * I * O < PAR_MIN_WORK) n_threads = 1;
    if (T < 3) {
        int nb = (O + 3) / 4;
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int b = 0; b < nb; b++)
            for (int t = 0; t < T; t++)
                dot_1x4(out + (size_t)t * O, inp + (size_t)t * I, w, bias, I, b * 4, O);
        return;
    }
    /* Blocks of 64 output rows (a weight block stays in L2 while every token
     * passes over it). */
    const int OB = 64;
    int nb = (O + OB - 1) / OB, T3 = T / 3 * 3;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) {
        int o_end = (b + 1) * OB < O ? (b + 1) * OB : O;
        for (int t = 0; t < T3; t += 3)
            for (int o = b * OB; o < o_end; o += 4)
                dot_3x4(out + (size_t)t * O, (size_t)O, inp + (size_t)t * I, w, bias, I, o_end, o);
        for (int t = T3; t < T; t++)
            for (int o = b * OB; o < o_end; o += 4)
                dot_1x4(out + (size_t)t * O, inp + (size_t)t * I, w, bias, I, o, o_end);
    }
}

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
/* torch's softplus: linear above its threshold of 20. */
static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

void cpu_activation(float *x, size_t n, gptc_act act, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) {
        float v = x[i], r;
        switch (act) {
        case ACT_GELU_TANH:
            r = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
            break;
        case ACT_GELU_ERF: r = gelu_erf(v); break;
        case ACT_GELU_10: r = fminf(fmaxf(gelu_erf(v), -10.0f), 10.0f); break;
        case ACT_QUICK_GELU: r = v * sigmoidf(1.702f * v); break;
        case ACT_RELU: r = v > 0 ? v : 0; break;
        case ACT_RELU2: r = v > 0 ? v * v : 0; break;
        case ACT_RELU6: r = fminf(fmaxf(v, 0.0f), 6.0f); break;
        case ACT_LEAKY_RELU: r = v >= 0 ? v : 0.01f * v; break;
        case ACT_SILU: r = v * sigmoidf(v); break;
        case ACT_TANH: r = tanhf(v); break;
        case ACT_SIGMOID: r = sigmoidf(v); break;
        case ACT_MISH: r = v * tanhf(softplusf(v)); break;
        case ACT_HARDSWISH: r = v <= -3.0f ? 0.0f : v >= 3.0f ? v : v * (v + 3.0f) / 6.0f; break;
        case ACT_SQRT_SOFTPLUS: r = sqrtf(softplusf(v)); break;
        case ACT_LAPLACE:
            r = 0.5f * (1.0f + erff((v - 0.707107f) / (0.282095f * 1.4142135623730951f)));
            break;
        default: r = v; break; /* ACT_LINEAR */
        }
        x[i] = r;
    }
}

static inline float dot(const float *a, const float *b, int n) {
    v8 acc = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) acc += load8(a + i) * load8(b + i);
    float s = hsum8(&acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* y (n) += a * x (n) */
static inline void axpy(float *y, float a, const float *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8 v = load8(y + i) + a * load8(x + i);
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++) y[i] += a * x[i];
}

void cpu_attention(float *out, const float *q, size_t q_stride, const cpu_kv_layout *kv, int T, int C,
                   int NH, float scale, float *scores, int score_len, int n_threads) {
    int D = C / NH;
    size_t bs = (size_t)kv->block_size, work = 0;
    for (int t = 0; t < T; t++) work += (size_t)kv->pos[t] + 1;
    if (work * C < PAR_MIN_WORK) n_threads = 1;
#pragma omp parallel for num_threads(n_threads) collapse(2) schedule(static)
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            float *s = scores + (size_t)omp_get_thread_num() * score_len;
            const float *qh = q + (size_t)t * q_stride + (size_t)h * D;
            const int32_t *table = kv->tables[kv->seq[t]];
            int n = kv->pos[t] + 1; /* causal: this position and all before it */
            float mx = -INFINITY;
            for (int j = 0; j < n; j++) {
                size_t row = ((size_t)table[j / bs] * bs + (size_t)j % bs) * C + (size_t)h * D;
                s[j] = dot(qh, kv->k + row, D) * scale;
                if (s[j] > mx) mx = s[j];
            }
            float sum = 0;
            for (int j = 0; j < n; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            float inv = 1.0f / sum;
            float *oh = out + (size_t)t * C + (size_t)h * D;
            memset(oh, 0, (size_t)D * sizeof *oh);
            for (int j = 0; j < n; j++) {
                size_t row = ((size_t)table[j / bs] * bs + (size_t)j % bs) * C + (size_t)h * D;
                axpy(oh, s[j] * inv, kv->v + row, D);
            }
        }
}

void cpu_add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}
