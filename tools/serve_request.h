/*
 * serve_request.h - the body of POST /v1/completions: parsed, and every field
 * checked against OpenAI's rules and the model's limits before anything runs.
 * A bad field is an error that names it (serve_error.param).
 */
#ifndef GPTC_SERVE_REQUEST_H
#define GPTC_SERVE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"

/* An OpenAI-style error: {"error": {"message", "type", "param", "code"}}. */
typedef struct {
    int status;       /* HTTP status */
    const char *type; /* "invalid_request_error", "server_error", ... */
    const char *code; /* NULL, or a code such as "model_not_found" */
    char param[64];   /* the field at fault; "" for none */
    char message[512];
} serve_error;

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
void serve_error_set(serve_error *e, int status, const char *param, const char *fmt, ...);

typedef struct {
    int32_t *ids;
    size_t n_ids;
    char *text; /* for echo: the prompt string as given, or its ids decoded */
    size_t text_len;
} serve_prompt;

/* What the request asks for, in gptc's terms. */
typedef struct {
    serve_prompt *prompts;
    size_t n_prompts;
    int32_t n; /* choices per prompt */
    /* max_new_tokens is max_tokens; no stop strings (the server matches stop
     * in the generated text itself, see serve_engine.c); seed is the base. */
    gptc_generate_params params;
    char **stops;
    size_t n_stops;
    int stream, include_usage, echo;
    int32_t logprobs; /* -1: none; else the top tokens wanted beside each chosen one */
    int nul_subst;    /* while parsing: U+FDD0 in strings stands for NUL (serve_request.c) */
} serve_completion;

/* What the checks need to know about the model and the server. */
typedef struct {
    const char *model_name; /* what "model" must be */
    const gptc_tokenizer *tok;
    int32_t n_vocab, n_ctx;
    gptc_generate_params defaults; /* the model's eos ids */
    size_t max_sequences;          /* prompts x n that one request may ask for */
} serve_limits;

/*
 * Parses `len` bytes of JSON. Returns 1 and fills *out (free it with
 * serve_completion_free), or 0 and fills *err (400 for a bad request, 500
 * when memory ran out).
 */
int serve_completion_parse(const char *body, size_t len, const serve_limits *lim,
                           serve_completion *out, serve_error *err);
void serve_completion_free(serve_completion *c);

/* Whether the n bytes at s are valid UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF); *bad receives the first bad offset. */
int serve_utf8_valid(const char *s, size_t n, size_t *bad);

#endif
