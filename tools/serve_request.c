/*
 * serve_request.c - parses and checks the body of POST /v1/completions.
 *
 * OpenAI's fields with OpenAI's defaults (max_tokens 16, temperature 1, top_p
 * 1, n 1), not the model's generation_config.json: a client written for the
 * OpenAI API gets what that API documents. The model supplies only its eos
 * ids. gptc's own processors are accepted as extra fields (top_k,
 * repetition_penalty, no_repeat_ngram_size, min_tokens, ignore_eos). A field
 * that is not one of these is refused, as OpenAI refuses it: a typo must not
 * silently fall back to a default.
 */
#include "serve_request.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

/* Stop sequences per request (OpenAI allows 4; gptc's CLI 16). */
#define MAX_STOPS 16
/* Longest stop sequence, in bytes: the engine keeps back as many bytes of a
 * stream while they may be the start of one. */
#define MAX_STOP_LEN 256
#define MAX_N 128
#define MAX_BEAMS 64 /* each beam is a sequence of every step */

void serve_error_set(serve_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = status >= 500 ? "server_error" : "invalid_request_error";
    e->code = NULL;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

int serve_utf8_valid(const char *str, size_t n, size_t *bad) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF)
            k = 1;
        else if (c == 0xE0)
            k = 2, lo = 0xA0;
        else if (c == 0xED)
            k = 2, hi = 0x9F; /* no surrogates */
        else if (c >= 0xE1 && c <= 0xEF)
            k = 2;
        else if (c == 0xF0)
            k = 3, lo = 0x90;
        else if (c == 0xF4)
            k = 3, hi = 0x8F; /* nothing above U+10FFFF */
        else if (c >= 0xF1 && c <= 0xF3)
            k = 3;
        else
            break;
        if (i + k >= n) break; /* truncated */
        if (s[i + 1] < lo || s[i + 1] > hi) break;
        size_t j = 2;
        while (j <= k && s[i + j] >= 0x80 && s[i + j] <= 0xBF)
            j++;
        if (j <= k) break;
        i += k + 1;
    }
    if (i < n) {
        if (bad) *bad = i;
        return 0;
    }
    return 1;
}

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

/* The field `name` of obj, or NULL when absent or null (the default then). */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* An integer in [lo, hi]; absent or null leaves *out as it is. */
static int get_int(const cJSON *obj, const char *name, double lo, double hi, int64_t *out,
                   serve_error *err) {
    const cJSON *v = field(obj, name);
    if (!v) return 1;
    if (!cJSON_IsNumber(v)) {
        serve_error_set(err, 400, name, "%s: expected an integer, got %s", name, type_name(v));
        return 0;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d < lo || d > hi) {
        serve_error_set(err, 400, name, "%s: %.17g is outside [%.17g, %.17g]", name, d, lo, hi);
        return 0;
    }
    if (d != floor(d)) {
        serve_error_set(err, 400, name, "%s: %.17g is not an integer", name, d);
        return 0;
    }
    *out = (int64_t)d;
    return 1;
}

/* A finite number in [lo, hi] (or (lo, hi] when lo_open). */
static int get_number(const cJSON *obj, const char *name, double lo, int lo_open, double hi,
                      double *out, serve_error *err) {
    const cJSON *v = field(obj, name);
    if (!v) return 1;
    if (!cJSON_IsNumber(v)) {
        serve_error_set(err, 400, name, "%s: expected a number, got %s", name, type_name(v));
        return 0;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d < lo || (lo_open && d == lo) || d > hi) {
        serve_error_set(err, 400, name, "%s: %.17g is outside %c%g, %g]", name, d,
                        lo_open ? '(' : '[', lo, hi);
        return 0;
    }
    *out = d;
    return 1;
}

static int get_bool(const cJSON *obj, const char *name, int *out, serve_error *err) {
    const cJSON *v = field(obj, name);
    if (!v) return 1;
    if (!cJSON_IsBool(v)) {
        serve_error_set(err, 400, name, "%s: expected a boolean, got %s", name, type_name(v));
        return 0;
    }
    *out = cJSON_IsTrue(v);
    return 1;
}

/* The fields this server knows; any other is refused. */
static const char *const k_fields[] = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "logprobs",
    "echo",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "best_of",
    "logit_bias",
    "user",
    "seed",
    "suffix",
    /* gptc's extensions */
    "top_k",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "min_tokens",
    "ignore_eos",
    "num_beams",
    "length_penalty",
    "early_stopping",
};

static uint64_t random_seed(void) {
    /* Only for requests that give no seed: distinct per request, not secret. */
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = (uint64_t)ts.tv_sec * 1000000007u + (uint64_t)ts.tv_nsec +
                 0x9E3779B97F4A7C15u * (atomic_fetch_add(&counter, 1) + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static int add_prompt(serve_completion *c, serve_error *err) {
    serve_prompt *p = realloc(c->prompts, (c->n_prompts + 1) * sizeof *p);
    if (!p) {
        serve_error_set(err, 500, NULL, "out of memory");
        return 0;
    }
    c->prompts = p;
    memset(&p[c->n_prompts++], 0, sizeof *p);
    return 1;
}

/*
 * cJSON ends its strings at a NUL, so a "\u0000" in a prompt would silently
 * cut it there. A body with such escapes is parsed with each one replaced by
 * "\ufdd0" (a noncharacter, and an escape of the same length), which prompt
 * strings turn back into NUL bytes. A body that holds U+FDD0 itself besides
 * is refused rather than guessed at.
 */
#define NUL_STANDIN "\xef\xb7\x90" /* U+FDD0 in UTF-8 */

/* 0: no NUL escape; 1: *copy is the body with them replaced; -1: the body
 * also holds U+FDD0; -2: out of memory. */
static int replace_nul_escapes(const char *s, size_t n, char **copy) {
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 2 < n && memcmp(s + i, NUL_STANDIN, 3) == 0) return -1;
        if (s[i] != '\\' || i + 1 >= n) continue;
        if (s[i + 1] == 'u' && i + 5 < n) {
            if (memcmp(s + i + 2, "0000", 4) == 0) found = 1;
            if (strncasecmp(s + i + 2, "fdd0", 4) == 0) return -1;
        }
        i++; /* the escaped character is not a backslash of its own */
    }
    if (!found) return 0;
    if (!(*copy = malloc(n + 1))) return -2;
    memcpy(*copy, s, n);
    (*copy)[n] = '\0';
    for (size_t i = 0; i + 5 < n; i++) {
        if ((*copy)[i] != '\\') continue;
        if (memcmp(*copy + i + 1, "u0000", 5) == 0) memcpy(*copy + i + 1, "ufdd0", 5);
        i++;
    }
    return 1;
}

/* The prompt's text, with NUL bytes back where the body had \u0000. */
static int dup_text(serve_prompt *p, const char *s, size_t n, int nul_subst, serve_error *err) {
    if (!(p->text = malloc(n + 1))) {
        serve_error_set(err, 500, NULL, "out of memory");
        return 0;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (nul_subst && i + 2 < n && memcmp(s + i, NUL_STANDIN, 3) == 0) {
            p->text[k++] = '\0';
            i += 2;
        } else
            p->text[k++] = s[i];
    }
    p->text[k] = '\0';
    p->text_len = k;
    return 1;
}

/* A string prompt; "" is <|endoftext|>, as OpenAI's default prompt. */
static int prompt_string(serve_completion *c, const char *s, const char *name,
                         const serve_limits *lim, serve_error *err) {
    if (!add_prompt(c, err)) return 0;
    serve_prompt *p = &c->prompts[c->n_prompts - 1];
    if (!dup_text(p, s, strlen(s), c->nul_subst, err)) return 0;
    if (p->text_len == 0) {
        int32_t eos = gptc_tokenizer_eos_id(lim->tok);
        if (eos < 0) {
            serve_error_set(err, 400, "prompt",
                            "%s: empty, and the model has no <|endoftext|> to start from", name);
            return 0;
        }
        if (!(p->ids = malloc(sizeof *p->ids))) {
            serve_error_set(err, 500, NULL, "out of memory");
            return 0;
        }
        p->ids[0] = eos;
        p->n_ids = 1;
        return 1;
    }
    if (gptc_tokenizer_encode(lim->tok, p->text, p->text_len, &p->ids, &p->n_ids) != GPTC_OK) {
        serve_error_set(err, 500, "prompt", "%s: %s", name, gptc_last_error());
        return 0;
    }
    return 1;
}

/* An array of token ids. */
static int prompt_ids(serve_completion *c, const cJSON *arr, const char *name,
                      const serve_limits *lim, serve_error *err) {
    int n = cJSON_GetArraySize(arr);
    if (n == 0) {
        serve_error_set(err, 400, "prompt", "%s: an empty array of token ids", name);
        return 0;
    }
    if (n > lim->n_ctx) {
        serve_error_set(err, 400, "prompt",
                        "%s: %d tokens; this model's maximum context length is %d tokens", name, n,
                        lim->n_ctx);
        return 0;
    }
    if (!add_prompt(c, err)) return 0;
    serve_prompt *p = &c->prompts[c->n_prompts - 1];
    if (!(p->ids = malloc((size_t)n * sizeof *p->ids))) {
        serve_error_set(err, 500, NULL, "out of memory");
        return 0;
    }
    int k = 0;
    for (const cJSON *v = arr->child; v; v = v->next, k++) {
        if (!cJSON_IsNumber(v)) {
            serve_error_set(err, 400, "prompt", "%s[%d]: expected a token id (an integer), got %s",
                            name, k, type_name(v));
            return 0;
        }
        double d = v->valuedouble;
        if (!(d >= 0 && d < lim->n_vocab) || d != floor(d)) {
            serve_error_set(err, 400, "prompt", "%s[%d]: %.17g is not a token id in [0, %d)", name,
                            k, d, lim->n_vocab);
            return 0;
        }
        p->ids[p->n_ids++] = (int32_t)d;
    }
    return 1;
}

/*
 * prompt: a string, an array of strings, an array of token ids, or an array
 * of arrays of token ids (OpenAI's four forms); absent is "".
 */
static int parse_prompt(const cJSON *root, const serve_limits *lim, serve_completion *c,
                        serve_error *err) {
    const cJSON *v = field(root, "prompt");
    if (!v) return prompt_string(c, "", "prompt", lim, err);
    if (cJSON_IsString(v)) return prompt_string(c, v->valuestring, "prompt", lim, err);
    if (!cJSON_IsArray(v)) {
        serve_error_set(
            err, 400, "prompt",
            "prompt: expected a string, an array of strings or an array of token ids, got %s",
            type_name(v));
        return 0;
    }
    const cJSON *first = v->child;
    if (!first) {
        serve_error_set(err, 400, "prompt", "prompt: an empty array");
        return 0;
    }
    if (cJSON_IsNumber(first)) return prompt_ids(c, v, "prompt", lim, err);
    int k = 0;
    for (const cJSON *e = first; e; e = e->next, k++) {
        char name[32];
        snprintf(name, sizeof name, "prompt[%d]", k);
        if ((size_t)k >= lim->max_sequences) {
            serve_error_set(err, 400, "prompt", "prompt: more than %zu prompts in one request",
                            lim->max_sequences);
            return 0;
        }
        if (cJSON_IsString(first) && cJSON_IsString(e)) {
            if (!prompt_string(c, e->valuestring, name, lim, err)) return 0;
        } else if (cJSON_IsArray(first) && cJSON_IsArray(e)) {
            if (!prompt_ids(c, e, name, lim, err)) return 0;
        } else {
            serve_error_set(err, 400, "prompt", "%s: expected %s like prompt[0], got %s", name,
                            cJSON_IsString(first)  ? "a string"
                            : cJSON_IsArray(first) ? "an array of token ids"
                                                   : "a string or an array",
                            type_name(e));
            return 0;
        }
    }
    return 1;
}

static int parse_stop(const cJSON *root, serve_completion *c, serve_error *err) {
    const cJSON *v = field(root, "stop");
    if (!v) return 1;
    if (!cJSON_IsString(v) && !cJSON_IsArray(v)) {
        serve_error_set(err, 400, "stop", "stop: expected a string or an array of strings, got %s",
                        type_name(v));
        return 0;
    }
    int n = cJSON_IsString(v) ? 1 : cJSON_GetArraySize(v);
    if (n > MAX_STOPS) {
        serve_error_set(err, 400, "stop", "stop: %d sequences; at most %d", n, MAX_STOPS);
        return 0;
    }
    if (n && !(c->stops = calloc((size_t)n, sizeof *c->stops))) {
        serve_error_set(err, 500, NULL, "out of memory");
        return 0;
    }
    const cJSON *e = cJSON_IsString(v) ? v : v->child;
    for (int k = 0; k < n; k++, e = e->next) {
        if (!cJSON_IsString(e)) {
            serve_error_set(err, 400, "stop", "stop[%d]: expected a string, got %s", k,
                            type_name(e));
            return 0;
        }
        size_t len = strlen(e->valuestring);
        if (c->nul_subst && strstr(e->valuestring, NUL_STANDIN)) {
            serve_error_set(err, 400, "stop", "stop: a NUL character (\\u0000) cannot be in a stop sequence");
            return 0;
        }
        if (len == 0 || len > MAX_STOP_LEN) {
            char name[32] = "stop";
            if (!cJSON_IsString(v)) snprintf(name, sizeof name, "stop[%d]", k);
            serve_error_set(err, 400, "stop", "%s: %zu bytes; a stop sequence has 1 to %d", name,
                            len, MAX_STOP_LEN);
            return 0;
        }
        if (!(c->stops[k] = malloc(len + 1))) {
            serve_error_set(err, 500, NULL, "out of memory");
            return 0;
        }
        memcpy(c->stops[k], e->valuestring, len + 1);
        c->n_stops++;
    }
    return 1;
}

/* Fields that OpenAI defines and gptc does not do (yet): only their "off"
 * value is accepted. */
static int parse_unsupported(const cJSON *root, serve_error *err) {
    const cJSON *v;
    if ((v = field(root, "suffix"))) {
        serve_error_set(err, 400, "suffix",
                        "suffix: not supported (GPT-2 does not do insertion); leave it out");
        return 0;
    }
    if ((v = field(root, "logit_bias")) && !(cJSON_IsObject(v) && !v->child)) {
        serve_error_set(err, 400, "logit_bias", "logit_bias: not supported; leave it out or {}");
        return 0;
    }
    return 1;
}

static int parse_fields(const cJSON *root, const serve_limits *lim, serve_completion *c,
                        serve_error *err) {
    for (const cJSON *v = root->child; v; v = v->next) {
        size_t k = 0;
        while (k < sizeof k_fields / sizeof k_fields[0] && strcmp(v->string, k_fields[k]))
            k++;
        if (k == sizeof k_fields / sizeof k_fields[0]) {
            serve_error_set(err, 400, v->string, "%.40s: unrecognized request argument", v->string);
            return 0;
        }
    }
    const cJSON *v = field(root, "model");
    if (v && !cJSON_IsString(v)) {
        serve_error_set(err, 400, "model", "model: expected a string, got %s", type_name(v));
        return 0;
    }
    if (v && strcmp(v->valuestring, lim->model_name) != 0) {
        serve_error_set(err, 400, "model",
                        "model: '%.100s' is not served here (this server has '%.100s')",
                        v->valuestring, lim->model_name);
        err->code = "model_not_found";
        return 0;
    }
    if ((v = field(root, "user")) && !cJSON_IsString(v)) {
        serve_error_set(err, 400, "user", "user: expected a string, got %s", type_name(v));
        return 0;
    }
    if (!parse_unsupported(root, err)) return 0;

    gptc_generate_params *p = &c->params;
    *p = lim->defaults;
    int64_t max_tokens = 16, n = 1, top_k = 0, ngram = 0, min_tokens = 0, beams = 1, best_of = -1;
    double temperature = 1, top_p = 1, rep = 1, presence = 0, frequency = 0;
    int ignore_eos = 0;
    if (!get_int(root, "max_tokens", 0, lim->n_ctx, &max_tokens, err)) return 0;
    if (!get_number(root, "temperature", 0, 0, 2, &temperature, err)) return 0;
    if (!get_number(root, "top_p", 0, 1, 1, &top_p, err)) return 0;
    if (!get_int(root, "n", 1, MAX_N, &n, err)) return 0;
    if (!get_int(root, "best_of", 1, MAX_N, &best_of, err)) return 0;
    if (best_of >= 0 && best_of != n) {
        serve_error_set(err, 400, "best_of", "best_of: only best_of = n (%lld) is supported",
                        (long long)n);
        return 0;
    }
    if (!get_bool(root, "stream", &c->stream, err) || !get_bool(root, "echo", &c->echo, err))
        return 0;
    /* OpenAI allows 5; vLLM's default limit is 20, as is the library's. */
    int64_t logprobs = -1;
    if (!get_int(root, "logprobs", 0, GPTC_MAX_TOP_LOGPROBS, &logprobs, err)) return 0;
    c->logprobs = (int32_t)logprobs;
    if ((v = field(root, "stream_options"))) {
        if (!cJSON_IsObject(v)) {
            serve_error_set(err, 400, "stream_options",
                            "stream_options: expected an object, got %s", type_name(v));
            return 0;
        }
        if (!c->stream) {
            serve_error_set(err, 400, "stream_options",
                            "stream_options: only allowed when stream is true");
            return 0;
        }
        for (const cJSON *o = v->child; o; o = o->next)
            if (strcmp(o->string, "include_usage") != 0) {
                serve_error_set(err, 400, "stream_options", "stream_options.%.40s: unrecognized",
                                o->string);
                return 0;
            }
        if (!get_bool(v, "include_usage", &c->include_usage, err)) return 0;
    }
    if (!get_number(root, "presence_penalty", -2, 0, 2, &presence, err)) return 0;
    if (!get_number(root, "frequency_penalty", -2, 0, 2, &frequency, err)) return 0;
    if ((v = field(root, "seed"))) {
        int64_t s = 0;
        if (!get_int(root, "seed", -9223372036854775807.0, 9223372036854774784.0, &s, err))
            return 0;
        p->seed = (uint64_t)s;
    } else
        p->seed = random_seed();
    if (!get_int(root, "top_k", -1, 2147483647.0, &top_k, err)) return 0;
    if (!get_number(root, "repetition_penalty", 0, 1, 1e6, &rep, err)) return 0;
    if (!get_int(root, "no_repeat_ngram_size", 0, lim->n_ctx, &ngram, err)) return 0;
    if (!get_int(root, "min_tokens", 0, lim->n_ctx, &min_tokens, err)) return 0;
    if (min_tokens > max_tokens) {
        serve_error_set(err, 400, "min_tokens", "min_tokens: %lld is more than max_tokens %lld",
                        (long long)min_tokens, (long long)max_tokens);
        return 0;
    }
    if (!get_bool(root, "ignore_eos", &ignore_eos, err)) return 0;
    if (!get_int(root, "num_beams", 1, MAX_BEAMS, &beams, err)) return 0;
    double length_penalty = 1.0;
    if (!get_number(root, "length_penalty", -1e6, 0, 1e6, &length_penalty, err)) return 0;
    gptc_early_stopping early = GPTC_EARLY_STOPPING_FALSE;
    if ((v = field(root, "early_stopping"))) {
        if (cJSON_IsBool(v))
            early = cJSON_IsTrue(v) ? GPTC_EARLY_STOPPING_TRUE : GPTC_EARLY_STOPPING_FALSE;
        else if (cJSON_IsString(v) && strcmp(v->valuestring, "never") == 0)
            early = GPTC_EARLY_STOPPING_NEVER;
        else {
            serve_error_set(err, 400, "early_stopping",
                            "early_stopping: expected true, false or \"never\", got %s", type_name(v));
            return 0;
        }
    }
    if (beams > 1) {
        /* as vLLM: beam search does not sample */
        if (temperature != 0) {
            serve_error_set(err, 400, "temperature",
                            "temperature: beam search (num_beams %lld) does not sample; set temperature 0",
                            (long long)beams);
            return 0;
        }
        if (n > beams) {
            serve_error_set(err, 400, "n", "n: %lld is more than num_beams %lld (the n best beams are returned)",
                            (long long)n, (long long)beams);
            return 0;
        }
        if (c->logprobs >= 0) {
            serve_error_set(err, 400, "logprobs", "logprobs: not supported with beam search (num_beams > 1)");
            return 0;
        }
        if (presence != 0 || frequency != 0) {
            serve_error_set(err, 400, presence != 0 ? "presence_penalty" : "frequency_penalty",
                            "%s: not supported with beam search (num_beams > 1)",
                            presence != 0 ? "presence_penalty" : "frequency_penalty");
            return 0;
        }
    }
    p->max_new_tokens = (int32_t)max_tokens;
    p->min_new_tokens = (int32_t)min_tokens;
    p->do_sample = temperature > 0;
    p->temperature = (float)temperature;
    p->top_k = top_k < 0 ? 0 : (int32_t)top_k;
    p->top_p = (float)top_p;
    p->repetition_penalty = (float)rep;
    p->no_repeat_ngram_size = (int32_t)ngram;
    p->presence_penalty = (float)presence;
    p->frequency_penalty = (float)frequency;
    p->stop_strings = NULL;
    p->n_stop_strings = 0;
    p->truncate_prompt = 0;
    p->num_beams = (int32_t)beams;
    /* beam search returns the n best beams of one search per prompt */
    p->num_return_sequences = beams > 1 ? (int32_t)n : 1;
    p->length_penalty = length_penalty;
    p->early_stopping = early;
    if (ignore_eos) p->n_eos_token_ids = 0;
    c->n = (int32_t)n;
    return parse_stop(root, c, err);
}

/* cJSON records its last parse error in a global; two threads parsing at
 * once would write it together. */
static pthread_mutex_t g_parse_mu = PTHREAD_MUTEX_INITIALIZER;

int serve_completion_parse(const char *body, size_t len, const serve_limits *lim,
                           serve_completion *c, serve_error *err) {
    memset(c, 0, sizeof *c);
    size_t bad;
    if (!serve_utf8_valid(body, len, &bad)) {
        serve_error_set(err, 400, NULL, "request body: not valid UTF-8 (byte %zu)", bad);
        return 0;
    }
    char *copy = NULL;
    int nul = replace_nul_escapes(body, len, &copy);
    if (nul == -1) {
        serve_error_set(err, 400, NULL,
                        "request body: holds both \\u0000 and U+FDD0, which gptc cannot tell apart");
        return 0;
    }
    if (nul == -2) {
        serve_error_set(err, 500, NULL, "out of memory");
        return 0;
    }
    c->nul_subst = nul;
    const char *end = NULL;
    const char *text = copy ? copy : body;
    pthread_mutex_lock(&g_parse_mu);
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    pthread_mutex_unlock(&g_parse_mu);
    /* positions in the copy are those of the body */
    if (end) end = body + (end - text);
    free(copy);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        serve_error_set(err, 400, NULL, "request body: not valid JSON (at byte %zu of %zu)", at,
                        len);
        return 0;
    }
    int ok = 0;
    if (end) /* only whitespace may follow the value */
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
    if (end != body + len) {
        serve_error_set(err, 400, NULL, "request body: not valid JSON (extra data at byte %zu)",
                        (size_t)(end - body));
    } else if (!cJSON_IsObject(root)) {
        serve_error_set(err, 400, NULL, "request body: expected a JSON object, got %s",
                        type_name(root));
    } else if (parse_fields(root, lim, c, err) && parse_prompt(root, lim, c, err)) {
        ok = 1;
        if (c->n_prompts * (size_t)c->n > lim->max_sequences) {
            serve_error_set(err, 400, "n",
                            "n: %zu prompts x n %d = %zu sequences; the server takes %zu at once",
                            c->n_prompts, c->n, c->n_prompts * (size_t)c->n, lim->max_sequences);
            ok = 0;
        }
        int32_t max_tokens = c->params.max_new_tokens;
        for (size_t i = 0; ok && i < c->n_prompts; i++) {
            serve_prompt *p = &c->prompts[i];
            if ((int64_t)p->n_ids + max_tokens > lim->n_ctx) {
                char which[32] = "";
                if (c->n_prompts > 1) snprintf(which, sizeof which, " (prompt %zu)", i);
                serve_error_set(
                    err, 400, "prompt",
                    "This model's maximum context length is %d tokens, however you requested %lld "
                    "tokens (%zu in your prompt%s; %d for the completion). Please reduce your "
                    "prompt; or completion length.",
                    lim->n_ctx, (long long)p->n_ids + max_tokens, p->n_ids, which, max_tokens);
                ok = 0;
            }
            if (ok && c->echo && !p->text) { /* token ids: their text */
                if (gptc_tokenizer_decode(lim->tok, p->ids, p->n_ids, &p->text, &p->text_len) !=
                    GPTC_OK) {
                    serve_error_set(err, 400, "prompt", "prompt: %s", gptc_last_error());
                    ok = 0;
                }
            }
        }
    }
    cJSON_Delete(root);
    if (!ok) serve_completion_free(c);
    return ok;
}

void serve_completion_free(serve_completion *c) {
    for (size_t i = 0; i < c->n_prompts; i++) {
        free(c->prompts[i].ids);
        free(c->prompts[i].text);
    }
    free(c->prompts);
    for (size_t i = 0; i < c->n_stops; i++)
        free(c->stops[i]);
    free(c->stops);
    memset(c, 0, sizeof *c);
}
