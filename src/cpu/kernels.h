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
 * Causal attention of T new positions starting at position pos0 over a cache
 * holding positions [0, pos0 + T). q (T, C) with row stride q_stride;
 * k_cache, v_cache (>= pos0 + T, C); out (T, C). `scores` is scratch of
 * n_threads * (pos0 + T) floats.
 */
void cpu_attention(float *out, const float *q, size_t q_stride, const float *k_cache,
                   const float *v_cache, int pos0, int T, int C, int NH, float scale,
                   float *scores, int n_threads);

/* x (n) += y (n) */
void cpu_add(float *x, const float *y, size_t n);

#endif
