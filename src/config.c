/*
 * config.c - config.json and generation_config.json.
 *
 * Reads the GPT2Config fields that change the math, with transformers'
 * defaults for the ones left out, and the generation defaults that
 * transformers' generate() would take from generation_config.json (or, when
 * that file is absent, from config.json, as GenerationConfig.from_model_config
 * does). Every field is type- and range-checked; errors name file and field.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "model.h"

static const struct {
    const char *name;
    gptc_act act;
} k_acts[] = {
    {"gelu_new", ACT_GELU_TANH},   {"gelu_fast", ACT_GELU_TANH}, {"gelu_pytorch_tanh", ACT_GELU_TANH},
    {"gelu_accurate", ACT_GELU_TANH}, {"gelu", ACT_GELU_ERF},    {"gelu_python", ACT_GELU_ERF},
    {"gelu_10", ACT_GELU_10},      {"quick_gelu", ACT_QUICK_GELU}, {"relu", ACT_RELU},
    {"relu2", ACT_RELU2},          {"relu6", ACT_RELU6},         {"leaky_relu", ACT_LEAKY_RELU},
    {"silu", ACT_SILU},            {"swish", ACT_SILU},          {"tanh", ACT_TANH},
    {"sigmoid", ACT_SIGMOID},      {"mish", ACT_MISH},           {"linear", ACT_LINEAR},
    {"laplace", ACT_LAPLACE},      {"gelu_python_tanh", ACT_GELU_TANH},
    {"hardswish", ACT_HARDSWISH},  {"sqrtsoftplus", ACT_SQRT_SOFTPLUS},
    /* Not here: prelu and xielu, whose learned parameters GPT-2 checkpoints
     * do not describe in config.json. */
};

int gptc_act_from_name(const char *name) {
    for (size_t i = 0; i < sizeof k_acts / sizeof k_acts[0]; i++)
        if (strcmp(name, k_acts[i].name) == 0) return (int)k_acts[i].act;
    return -1;
}

/* An integer value in [lo, hi]; the message names `key`. */
static gptc_status int_value(const cJSON *v, const char *key, const char *path, int64_t lo,
                             int64_t hi, int32_t *out) {
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble)
        return gptc_fail(GPTC_ERR_FORMAT, "%s: field '%s' must be an integer", path, key);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return gptc_fail(GPTC_ERR_FORMAT, "%s: field '%s' = %.17g is out of range [%lld, %lld]",
                         path, key, v->valuedouble, (long long)lo, (long long)hi);
    *out = (int32_t)v->valuedouble;
    return GPTC_OK;
}

/* An integer field: absent or null leaves *out unchanged. */
static gptc_status get_int(const cJSON *o, const char *key, const char *path, int64_t lo,
                           int64_t hi, int32_t *out, int *present) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (present) *present = 0;
    if (!v || cJSON_IsNull(v)) return GPTC_OK;
    gptc_status st = int_value(v, key, path, lo, hi, out);
    if (st == GPTC_OK && present) *present = 1;
    return st;
}

static gptc_status get_double(const cJSON *o, const char *key, const char *path, double lo,
                              double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return GPTC_OK;
    if (!cJSON_IsNumber(v))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: field '%s' must be a number", path, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: field '%s' = %.17g is out of range [%g, %g]", path,
                         key, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return GPTC_OK;
}

static gptc_status get_float(const cJSON *o, const char *key, const char *path, double lo,
                             double hi, float *out) {
    double d = NAN;
    gptc_status st = get_double(o, key, path, lo, hi, &d);
    if (st == GPTC_OK && !isnan(d)) *out = (float)d;
    return st;
}

static gptc_status get_bool(const cJSON *o, const char *key, const char *path, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return GPTC_OK;
    if (!cJSON_IsBool(v))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: field '%s' must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return GPTC_OK;
}

/* A token id, or for eos_token_id a list of them (transformers accepts both).
 * Ids at or past the vocabulary size are dropped: transformers accepts them
 * (GPT2Config's default 50256 in a small model), but such a token can never be
 * generated. Null or absent: *n = 0. */
static gptc_status get_token_ids(const cJSON *o, const char *key, const char *path, int32_t n_vocab,
                                 int32_t *ids, int32_t *n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *n = 0;
    if (!v || cJSON_IsNull(v)) return GPTC_OK;
    int count = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    if (count > GPTC_MAX_EOS)
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: field '%s' lists %d ids (gptc takes at most %d)",
                         path, key, count, GPTC_MAX_EOS);
    for (int i = 0; i < count; i++) {
        int32_t id = 0;
        gptc_status st =
            int_value(cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : v, key, path, 0, INT32_MAX, &id);
        if (st != GPTC_OK) return st;
        if (id < n_vocab) ids[(*n)++] = id;
    }
    return GPTC_OK;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((st = (x)) != GPTC_OK) goto done;                                                      \
    } while (0)

gptc_status gptc_config_check(gptc_config *c, const char *path) {
    if (c->n_embd % c->n_head != 0)
        return gptc_fail(GPTC_ERR_FORMAT, "%s: n_embd (%d) is not a multiple of n_head (%d)", path,
                         c->n_embd, c->n_head);
    if (c->n_inner <= 0) c->n_inner = 4 * c->n_embd;
    return GPTC_OK;
}

static gptc_status parse_config(const cJSON *j, const char *path, gptc_config *c, gptc_act *act,
                                int *tied, gptc_gen_defaults *g) {
    gptc_status st = GPTC_OK;
    if (!cJSON_IsObject(j)) return gptc_fail(GPTC_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "gpt2") != 0))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: field 'model_type' is '%s', gptc runs only 'gpt2'",
                         path, cJSON_IsString(mt) ? mt->valuestring : "(not a string)");
    static const char *required[] = {"vocab_size", "n_embd", "n_layer", "n_head"};
    for (size_t i = 0; i < 4; i++)
        if (!cJSON_GetObjectItemCaseSensitive(j, required[i]))
            return gptc_fail(GPTC_ERR_FORMAT, "%s: missing field '%s'", path, required[i]);
    const int32_t big = 1 << 24;
    TRY(get_int(j, "vocab_size", path, 1, big, &c->n_vocab, NULL));
    TRY(get_int(j, "n_embd", path, 1, 1 << 16, &c->n_embd, NULL));
    TRY(get_int(j, "n_layer", path, 1, 1024, &c->n_layer, NULL));
    TRY(get_int(j, "n_head", path, 1, 1024, &c->n_head, NULL));
    c->n_ctx = 1024;
    int has_pos = 0;
    TRY(get_int(j, "n_positions", path, 1, 1 << 20, &c->n_ctx, &has_pos));
    if (!has_pos) TRY(get_int(j, "n_ctx", path, 1, 1 << 20, &c->n_ctx, NULL));
    c->n_inner = 0;
    TRY(get_int(j, "n_inner", path, 1, 1 << 20, &c->n_inner, NULL));
    c->layer_norm_epsilon = 1e-5f;
    TRY(get_float(j, "layer_norm_epsilon", path, 0.0, 1.0, &c->layer_norm_epsilon));
    snprintf(c->activation, sizeof c->activation, "gelu_new");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "activation_function");
    if (a) {
        if (!cJSON_IsString(a))
            return gptc_fail(GPTC_ERR_FORMAT, "%s: field 'activation_function' must be a string", path);
        if (gptc_act_from_name(a->valuestring) < 0)
            return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: field 'activation_function': unknown activation '%.40s'",
                             path, a->valuestring);
        snprintf(c->activation, sizeof c->activation, "%s", a->valuestring);
    }
    *act = (gptc_act)gptc_act_from_name(c->activation);
    c->scale_attn_weights = 1;
    c->scale_attn_by_inverse_layer_idx = 0;
    c->reorder_and_upcast_attn = 0;
    TRY(get_bool(j, "scale_attn_weights", path, &c->scale_attn_weights));
    TRY(get_bool(j, "scale_attn_by_inverse_layer_idx", path, &c->scale_attn_by_inverse_layer_idx));
    TRY(get_bool(j, "reorder_and_upcast_attn", path, &c->reorder_and_upcast_attn));
    *tied = 1;
    TRY(get_bool(j, "tie_word_embeddings", path, tied));
    TRY(gptc_config_check(c, path));
    /* GPT2Config's defaults for both are 50256. */
    int32_t ids[GPTC_MAX_EOS], n = 1;
    ids[0] = 50256;
    if (cJSON_GetObjectItemCaseSensitive(j, "bos_token_id"))
        TRY(get_token_ids(j, "bos_token_id", path, INT32_MAX, ids, &n));
    c->bos_token_id = n && ids[0] < c->n_vocab ? ids[0] : -1;
    g->eos_ids[0] = 50256;
    g->n_eos = 1;
    if (cJSON_GetObjectItemCaseSensitive(j, "eos_token_id"))
        TRY(get_token_ids(j, "eos_token_id", path, INT32_MAX, g->eos_ids, &g->n_eos));
    c->eos_token_id = g->n_eos ? g->eos_ids[0] : -1;
    /* Without generation_config.json these are the eos ids generate() uses. */
    int32_t k = 0;
    for (int32_t i = 0; i < g->n_eos; i++)
        if (g->eos_ids[i] < c->n_vocab) g->eos_ids[k++] = g->eos_ids[i];
    g->n_eos = k;
    if (c->eos_token_id >= c->n_vocab) c->eos_token_id = -1;
done:
    return st;
}

static gptc_status parse_generation(const cJSON *j, const char *path, gptc_gen_defaults *g,
                                    int32_t n_vocab) {
    gptc_status st = GPTC_OK;
    if (!cJSON_IsObject(j)) return gptc_fail(GPTC_ERR_FORMAT, "%s: not a JSON object", path);
    TRY(get_int(j, "max_new_tokens", path, 0, INT32_MAX, &g->max_new_tokens, NULL));
    TRY(get_int(j, "max_length", path, 0, INT32_MAX, &g->max_length, NULL));
    TRY(get_int(j, "min_new_tokens", path, 0, INT32_MAX, &g->min_new_tokens, NULL));
    TRY(get_int(j, "top_k", path, 0, INT32_MAX, &g->top_k, NULL));
    TRY(get_int(j, "no_repeat_ngram_size", path, 0, INT32_MAX, &g->no_repeat_ngram_size, NULL));
    TRY(get_bool(j, "do_sample", path, &g->do_sample));
    TRY(get_float(j, "temperature", path, 0.0, 1e30, &g->temperature));
    TRY(get_float(j, "top_p", path, 0.0, 1.0, &g->top_p));
    TRY(get_float(j, "repetition_penalty", path, 1e-30, 1e30, &g->repetition_penalty));
    TRY(get_int(j, "num_beams", path, 1, 1024, &g->num_beams, NULL));
    TRY(get_int(j, "num_return_sequences", path, 1, 1024, &g->num_return_sequences, NULL));
    TRY(get_double(j, "length_penalty", path, -1e30, 1e30, &g->length_penalty));
    /* early_stopping is true, false or "never", as transformers accepts. */
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(j, "early_stopping");
    if (es && !cJSON_IsNull(es)) {
        if (cJSON_IsBool(es)) g->early_stopping = cJSON_IsTrue(es) ? GPTC_EARLY_STOPPING_TRUE
                                                                   : GPTC_EARLY_STOPPING_FALSE;
        else if (cJSON_IsString(es) && strcmp(es->valuestring, "never") == 0)
            g->early_stopping = GPTC_EARLY_STOPPING_NEVER;
        else
            return gptc_fail(GPTC_ERR_FORMAT, "%s: field 'early_stopping' must be true, false or \"never\"",
                             path);
    }
    /* generation_config.json's eos ids, when given (null included), replace
     * config.json's. */
    if (cJSON_GetObjectItemCaseSensitive(j, "eos_token_id")) {
        g->has_eos = 1;
        TRY(get_token_ids(j, "eos_token_id", path, n_vocab, g->eos_ids, &g->n_eos));
    }
done:
    return st;
}

gptc_status gptc_config_load(const char *dir, gptc_config *cfg, gptc_act *act, int *tied,
                             gptc_gen_defaults *gen) {
    memset(cfg, 0, sizeof *cfg);
    *gen = gptc_gen_defaults_none();
    char *path = gptc_path_join(dir, "config.json");
    char *gpath = gptc_path_join(dir, "generation_config.json");
    cJSON *j = NULL;
    gptc_status st = GPTC_OK;
    if (!path || !gpath) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!gptc_file_exists(path)) {
        st = gptc_fail(GPTC_ERR_IO, "%s: no config.json in the model folder", path);
        goto done;
    }
    TRY(gptc_read_json(path, &j));
    TRY(parse_config(j, path, cfg, act, tied, gen));
    cJSON_Delete(j);
    j = NULL;
    if (gptc_file_exists(gpath)) {
        TRY(gptc_read_json(gpath, &j));
        TRY(parse_generation(j, gpath, gen, cfg->n_vocab));
    }
done:
    cJSON_Delete(j);
    free(path);
    free(gpath);
    return st;
}
