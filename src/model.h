/*
 * model.h - the in-memory model: config, generation defaults and weights.
 *
 * All weights live in one fp32 allocation (the arena) with named pointers into
 * it. Linear weights are stored [out][in] (rows are output features), the
 * transpose of Hugging Face's Conv1D layout, so that every matrix product -
 * GEMV in decode, GEMM in prefill, the LM head against wte - is a set of
 * contiguous dot products that stream memory front to back.
 *
 * Legend for shape comments: V vocab, P positions, C n_embd, F n_inner.
 */
#ifndef GPTC_MODEL_H
#define GPTC_MODEL_H

#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include "gptc.h"

typedef enum {
    ACT_GELU_TANH, /* gelu_new, gelu_fast, gelu_pytorch_tanh, gelu_python_tanh, gelu_accurate */
    ACT_GELU_ERF,  /* gelu, gelu_python */
    ACT_GELU_10,   /* exact gelu clipped to [-10, 10] */
    ACT_QUICK_GELU,
    ACT_RELU,
    ACT_RELU2,
    ACT_RELU6,
    ACT_LEAKY_RELU,
    ACT_SILU, /* silu, swish */
    ACT_TANH,
    ACT_SIGMOID,
    ACT_MISH,
    ACT_LINEAR,
    ACT_LAPLACE,
    ACT_HARDSWISH,
    ACT_SQRT_SOFTPLUS,
} gptc_act;

typedef struct {
    float *ln1_w, *ln1_b;   /* (C) */
    float *attn_w;          /* (3C, C) q, k, v rows */
    float *attn_b;          /* (3C) */
    float *proj_w;          /* (C, C) */
    float *proj_b;          /* (C) */
    float *ln2_w, *ln2_b;   /* (C) */
    float *fc_w;            /* (F, C) */
    float *fc_b;            /* (F) */
    float *mproj_w;         /* (C, F) */
    float *mproj_b;         /* (C) */
} gptc_layer;

/* generation_config.json, as far as gptc uses it; -1/NaN mean "not given". */
typedef struct {
    int32_t max_new_tokens, max_length, min_new_tokens, top_k, no_repeat_ngram_size;
    int32_t eos_ids[GPTC_MAX_EOS]; /* the eos ids generation stops on */
    int32_t n_eos;
    int do_sample;
    int has_eos; /* generation_config.json gave eos_token_id */
    float temperature, top_p, repetition_penalty;
    int32_t num_beams, num_return_sequences;
    int early_stopping; /* a gptc_early_stopping value */
    double length_penalty;
} gptc_gen_defaults;

/* Nothing given: every field at its "not given" value. */
static inline gptc_gen_defaults gptc_gen_defaults_none(void) {
    return (gptc_gen_defaults){.max_new_tokens = -1, .max_length = -1, .min_new_tokens = -1,
                               .top_k = -1, .no_repeat_ngram_size = -1, .n_eos = 0,
                               .do_sample = 0, .has_eos = 0, .temperature = NAN,
                               .top_p = NAN, .repetition_penalty = NAN, .num_beams = -1,
                               .num_return_sequences = -1, .early_stopping = -1,
                               .length_penalty = NAN};
}

struct gptc_backend_ops;

struct gptc_model {
    gptc_config cfg;
    const struct gptc_backend_ops *backend;
    void *backend_state; /* the backend's own copy of the weights, if any */
    gptc_act act;
    gptc_gen_defaults gen;
    int tied;         /* lm_head shares wte */
    int weight_bytes; /* bytes per weight element as the backend holds them */
    int n_threads;
    int32_t device; /* gptc_model_params.device */
    void (*progress)(float fraction, void *user); /* while loading; may be NULL */
    void *progress_user;
    float *arena;
    size_t arena_len; /* floats */
    float *wte;       /* (V, C) */
    float *wpe;       /* (P, C) */
    float *lnf_w, *lnf_b;
    float *lm_head;   /* (V, C); == wte when tied */
    gptc_layer *layers;
};

/* The factor attention scores are multiplied by in layer l (0-based), as in
 * transformers' GPT2Attention. */
static inline float gptc_attn_scale(const gptc_config *c, int l) {
    float scale = 1.0f;
    if (c->scale_attn_weights) scale /= sqrtf((float)(c->n_embd / c->n_head));
    if (c->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
    return scale;
}

/* Reads config.json (and generation_config.json if present) from `dir`. */
gptc_status gptc_config_load(const char *dir, gptc_config *cfg, gptc_act *act, int *tied,
                             gptc_gen_defaults *gen);
/* Maps an activation_function name to its kernel; -1 if unknown. */
int gptc_act_from_name(const char *name);
/* Fills `cfg`'s derived fields and checks its ranges; names the file on error. */
gptc_status gptc_config_check(gptc_config *cfg, const char *path);
/* Lays out the arena for cfg and sets every weight pointer. */
gptc_status gptc_model_alloc(gptc_model *m);

#endif
