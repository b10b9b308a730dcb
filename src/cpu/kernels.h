/*
 * kernels.h - the CPU backend's compute kernels, fp32, OpenMP-parallel.
 *
 * These are the reference for every other backend: plain loops written so the
 * compiler vectorises them. Legend: T tokens in the pass, C n_embd, I inputs,
 * O outputs, D head size, NH heads.
 */
#ifndef GPTC_CPU_KERNELS_H
#define GPTC_CPU_KERNELS_H

#include <stddef.h>

#include "model.h"

/* out (T, C) = layernorm(inp (T, C)) * w + b, biased variance as in torch. */
void cpu_layernorm(float *out, const float *inp, const float *w, const float *b, int T, int C,
                   float eps);

/* out (T, O) = inp (T, I) @ w (O, I)^T + bias (O) (bias may be NULL). */
void cpu_matmul(float *out, const float *inp, const float *w, const float *bias, int T, int I, int O,
                int n_threads);

/* In place on n values. */
void cpu_activation(float *x, size_t n, gptc_act act, int n_threads);

/*
 * Where the attention of a pass finds K and V: token t of the pass is at
 * position pos[t] of sequence seq[t], whose position j is row j % block_size
 * of block tables[seq[t]][j / block_size] in k and v (one layer's blocks,
 * block_size * C floats each).
 */
typedef struct {
    const float *k, *v;
    int32_t block_size;
    const int32_t *const *tables;
    const int32_t *seq, *pos;
} cpu_kv_layout;

/*
 * Causal attention of the T tokens of a pass: token t attends to positions
 * [0, pos[t]] of its sequence (its own K/V already written). q (T, C) with
 * row stride q_stride; out (T, C). `scores` is scratch of n_threads *
 * score_len floats, score_len > every pos[t].
 */
void cpu_attention(float *out, const float *q, size_t q_stride, const cpu_kv_layout *kv, int T, int C,
                   int NH, float scale, float *scores, int score_len, int n_threads);

/* x (n) += y (n) */
void cpu_add(float *x, const float *y, size_t n);

#endif
