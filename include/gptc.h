/*
 * gptc.h - the public C API of libgptc.
 *
 * gptc runs Hugging Face GPT-2-family checkpoints (GPT2LMHeadModel) for text
 * generation. This header is the whole public surface: opaque handles,
 * *_default_params() constructors, and integer status codes.
 *
 * Errors: every function that can fail returns a gptc_status. On failure a
 * one-line message naming the file, field or argument at fault is available
 * from gptc_last_error() (thread-local, valid until the next failing call on
 * the same thread). The library never exits or aborts on bad input.
 *
 * Ownership: objects created by *_load / *_new are freed by the matching
 * *_free. Arrays returned through `T **out` parameters are allocated with
 * malloc() and owned by the caller, who releases them with free().
 *
 * Token ids are int32_t. Sizes and counts are size_t.
 */
#ifndef GPTC_H
#define GPTC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GPTC_VERSION "0.1.0"

/* At most this many eos ids (generation_config.json may list several). */
#define GPTC_MAX_EOS 8

typedef enum {
    GPTC_OK = 0,
    GPTC_ERR_ARG = 1,         /* a caller-supplied argument is invalid */
    GPTC_ERR_IO = 2,          /* a file is missing or cannot be read */
    GPTC_ERR_FORMAT = 3,      /* a file is malformed or disagrees with itself */
    GPTC_ERR_NOMEM = 4,       /* an allocation failed */
    GPTC_ERR_RANGE = 5,       /* a length or id is out of the model's range */
    GPTC_ERR_UNSUPPORTED = 6, /* valid input that gptc does not handle */
} gptc_status;

/* The message of the last failure on this thread ("" if none). */
const char *gptc_last_error(void);

/* ------------------------------------------------------------------ */
/* Tokenizer: byte-level BPE, identical to transformers' GPT2TokenizerFast. */

typedef struct gptc_tokenizer gptc_tokenizer;

/* Loads from a folder: vocab.json + merges.txt, else tokenizer.json. */
gptc_status gptc_tokenizer_load(const char *dir, gptc_tokenizer **out);
/* Loads from explicit vocab.json and merges.txt paths. */
gptc_status gptc_tokenizer_load_files(const char *vocab_json, const char *merges_txt,
                                      gptc_tokenizer **out);
void gptc_tokenizer_free(gptc_tokenizer *tok);

/* Number of ids the tokenizer can produce (vocabulary + added tokens). */
int32_t gptc_tokenizer_n_vocab(const gptc_tokenizer *tok);
/* Id of "<|endoftext|>", or -1 if the vocabulary has none. */
int32_t gptc_tokenizer_eos_id(const gptc_tokenizer *tok);

/*
 * Encodes `len` bytes of UTF-8 text. Special tokens written in the text (e.g.
 * "<|endoftext|>") map to their ids, as transformers does. Invalid UTF-8:
 * each maximal invalid subsequence is replaced by U+FFFD before encoding,
 * exactly like Python's bytes.decode("utf-8", errors="replace").
 * *ids is malloc'ed (may be NULL when *n_ids == 0).
 */
gptc_status gptc_tokenizer_encode(const gptc_tokenizer *tok, const char *text, size_t len,
                                  int32_t **ids, size_t *n_ids);

/*
 * Raw bytes of one token (the byte-level alphabet already undone); not
 * NUL-terminated and possibly not valid UTF-8 on its own. NULL with *len = 0
 * for an id out of range.
 */
const char *gptc_tokenizer_token_bytes(const gptc_tokenizer *tok, int32_t id, size_t *len);

/*
 * Decodes ids to UTF-8 text. Byte sequences that are not valid UTF-8 become
 * U+FFFD, like transformers' decode(). *text is malloc'ed and NUL-terminated.
 * An id out of range is GPTC_ERR_RANGE.
 */
gptc_status gptc_tokenizer_decode(const gptc_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  char **text, size_t *len);

/*
 * Incremental detokenizer for streaming: never emits part of a UTF-8
 * character. Text that can never become valid is emitted as U+FFFD as soon as
 * that is certain; gptc_detok_flush emits what is left (incomplete tail as
 * U+FFFD). The concatenation of everything emitted equals
 * gptc_tokenizer_decode() of all pushed ids.
 */
typedef struct gptc_detok gptc_detok;
gptc_status gptc_detok_new(const gptc_tokenizer *tok, gptc_detok **out);
void gptc_detok_free(gptc_detok *d);
/* *text points into the detokenizer, valid until its next call. */
gptc_status gptc_detok_push(gptc_detok *d, int32_t id, const char **text, size_t *len);
gptc_status gptc_detok_flush(gptc_detok *d, const char **text, size_t *len);

/* ------------------------------------------------------------------ */
/* Model. */

typedef struct gptc_model gptc_model;

typedef enum { GPTC_DTYPE_F32 = 0, GPTC_DTYPE_F16 = 1, GPTC_DTYPE_BF16 = 2 } gptc_dtype;

/* The GPT2Config fields that change the math, as loaded. */
typedef struct {
    int32_t n_vocab;
    int32_t n_ctx; /* n_positions */
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_inner;
    float layer_norm_epsilon;
    char activation[32]; /* activation_function, as written in config.json */
    int scale_attn_weights;
    int scale_attn_by_inverse_layer_idx;
    int reorder_and_upcast_attn;
    int32_t bos_token_id; /* -1 when absent */
    int32_t eos_token_id; /* config.json's (the first if a list); -1 when absent */
    gptc_dtype dtype;     /* dtype of the checkpoint's weights (first tensor) */
} gptc_config;

typedef struct {
    int n_threads;       /* CPU threads; 0: all cores */
    const char *backend; /* "cpu", "cuda", or NULL / "auto": cuda when a GPU is usable */
    gptc_dtype dtype;    /* weights on the device (cuda); the CPU always computes in fp32 */
} gptc_model_params;

gptc_model_params gptc_model_default_params(void);

/*
 * Loads a Hugging Face checkpoint folder: config.json plus model.safetensors,
 * or model.safetensors.index.json plus its shards; generation_config.json if
 * present. Every header field and tensor extent is checked against the file.
 */
gptc_status gptc_model_load(const char *dir, const gptc_model_params *params, gptc_model **out);

/*
 * Builds a model of a named shape ("gpt2", "gpt2-medium", "gpt2-large",
 * "gpt2-xl", "tiny") with random weights from `seed`: for benchmarks.
 */
gptc_status gptc_model_from_shape(const char *shape, uint64_t seed,
                                  const gptc_model_params *params, gptc_model **out);
void gptc_model_free(gptc_model *model);

const gptc_config *gptc_model_config(const gptc_model *model);
/* Bytes of weights one decode step reads (each matrix once, LM head once), in
 * the precision the backend holds them. */
size_t gptc_model_weight_bytes(const gptc_model *model);
int gptc_model_n_threads(const gptc_model *model);
/* "cpu" or "cuda": the backend the model runs on. */
const char *gptc_model_backend(const gptc_model *model);

/* ------------------------------------------------------------------ */
/* Sessions: one sequence with its own K/V cache, allocated once. */

typedef struct gptc_session gptc_session;

/* Allocates a K/V cache for up to `max_len` positions (<= n_ctx). */
gptc_status gptc_session_new(gptc_model *model, int32_t max_len, gptc_session **out);
void gptc_session_free(gptc_session *s);
/* Forgets all positions (the cache memory is kept). */
void gptc_session_reset(gptc_session *s);
/* Positions held in the cache. */
int32_t gptc_session_len(const gptc_session *s);

/*
 * Appends `n` tokens to the sequence in one pass (prefill, or one decode step
 * when n == 1) and writes the logits of the last `n_logits` of them
 * (0 <= n_logits <= n) to `logits`, row-major [n_logits][n_vocab]. Logits are
 * computed only for those positions.
 */
gptc_status gptc_session_eval(gptc_session *s, const int32_t *ids, size_t n, size_t n_logits,
                              float *logits);

/*
 * Appends one token and returns the greedy next token in *next; on a GPU
 * backend the logits never leave the device. GPTC_ERR_UNSUPPORTED when the
 * backend has no such path (gptc_session_has_greedy says which).
 */
int gptc_session_has_greedy(const gptc_session *s);
gptc_status gptc_session_eval_greedy(gptc_session *s, int32_t id, int32_t *next);

/* ------------------------------------------------------------------ */
/* Generation, with transformers generate() semantics and processor order. */

typedef struct {
    int32_t max_new_tokens;     /* >= 0; -1: up to max_length tokens in all */
    int32_t max_length;         /* prompt + new tokens, used when max_new_tokens is -1 */
    int32_t min_new_tokens;     /* every eos id is banned before this many new tokens */
    int do_sample;              /* 0: greedy */
    float temperature;          /* > 0 when sampling */
    int32_t top_k;              /* 0: off */
    float top_p;                /* in (0, 1]; 1: off */
    float repetition_penalty;   /* > 0; 1: off */
    int32_t no_repeat_ngram_size; /* 0: off */
    uint64_t seed;
    int32_t eos_token_ids[GPTC_MAX_EOS]; /* stop on any of these ... */
    int32_t n_eos_token_ids;    /* ... the first n of them (0: never stop on eos) */
    const char *const *stop_strings; /* stop once the generated text reaches one */
    size_t n_stop_strings;
    int truncate_prompt; /* 1: keep the last tokens of a prompt that is too long */
} gptc_generate_params;

/* Defaults of the model's generation_config.json, else transformers' defaults. */
gptc_generate_params gptc_generate_default_params(const gptc_model *model);

/* Called with each new token id; return non-zero to stop generating. */
typedef int (*gptc_token_fn)(int32_t id, void *user);

/*
 * Generates a continuation of `prompt`. `tok` may be NULL unless stop strings
 * are given. The generated ids (without the prompt) are returned in *out_ids
 * (malloc'ed) when out_ids is non-NULL. Prompt + max_new_tokens beyond n_ctx is
 * GPTC_ERR_RANGE unless truncate_prompt is set.
 */
gptc_status gptc_generate(gptc_model *model, const gptc_tokenizer *tok, const int32_t *prompt,
                          size_t n_prompt, const gptc_generate_params *params, gptc_token_fn fn,
                          void *user, int32_t **out_ids, size_t *n_out);

/*
 * Perplexity of `ids` with the sliding-window recipe of the transformers
 * documentation (window n_ctx, the given stride).
 */
gptc_status gptc_perplexity(gptc_model *model, const int32_t *ids, size_t n, int32_t stride,
                            double *ppl);

#ifdef __cplusplus
}
#endif
#endif /* GPTC_H */
