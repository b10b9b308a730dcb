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

/* 1 if this libgptc was built with the CUDA backend (a usable GPU is still
 * checked when a model loads), 0 if it has the CPU backend only. */
int gptc_has_cuda(void);

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
    /* Optional: called as loading goes on, with the fraction done (0 .. 1;
     * 1 once the backend has the weights). */
    void (*progress)(float fraction, void *user);
    void *progress_user;
    /* cuda: the GPU (CUDA device ordinal, as nvidia-smi numbers them unless
     * CUDA_VISIBLE_DEVICES says otherwise); each model may live on its own,
     * and every call on it runs there, from any thread. The cpu backend
     * takes only 0. */
    int32_t device;
} gptc_model_params;

gptc_model_params gptc_model_default_params(void);

/*
 * Loads a Hugging Face checkpoint folder: config.json plus model.safetensors,
 * or model.safetensors.index.json plus its shards; generation_config.json if
 * present. Every header field and tensor extent is checked against the file.
 */
gptc_status gptc_model_load(const char *dir, const gptc_model_params *params, gptc_model **out);

/* What a checkpoint folder holds, from config.json and the safetensors
 * headers alone (no weights are read). */
typedef struct {
    gptc_config config;       /* as gptc_model_load reads it */
    int tied;                 /* the LM head is wte */
    uint64_t n_params;        /* parameters the model uses; a tied LM head counts once */
    uint64_t n_matrix_params; /* of which in weight matrices (embeddings and LM head included);
                                 the rest are biases, norms and position embeddings */
    uint32_t n_tensors[4];    /* tensors stored as F32, F16, BF16 (gptc_dtype's order), other */
    uint32_t n_files;         /* safetensors files */
    uint64_t file_bytes;      /* their total size */
} gptc_model_info;

/* Checks a checkpoint folder as gptc_model_load does (every tensor's shape and
 * extent) and describes it, without loading the weights. */
gptc_status gptc_model_inspect(const char *dir, gptc_model_info *out);

/*
 * Resolves a model name as transformers' from_pretrained does. A path to an
 * existing folder is returned as it is. Otherwise `name_or_dir` must be a
 * Hugging Face Hub model id ("gpt2", "org/name") and `revision` a branch, tag
 * or commit hash (NULL or "": "main"); the result is the model's snapshot
 * folder in huggingface_hub's cache (HF_HUB_CACHE, else $HF_HOME/hub, else
 * ~/.cache/huggingface/hub, or $XDG_CACHE_HOME/huggingface/hub when that is
 * set), shared with transformers both ways:
 * - a snapshot that already has config.json, the safetensors weights (every
 *   shard of an index) and the tokenizer files is used without any request;
 * - otherwise the missing files are downloaded from $HF_ENDPOINT (default
 *   https://huggingface.co), with $HF_TOKEN (else the token file of
 *   `huggingface-cli login`) for gated and private models, resuming partial
 *   downloads, with a progress bar on stderr when it is a terminal (unless
 *   HF_HUB_DISABLE_PROGRESS_BARS=1);
 * - with HF_HUB_OFFLINE=1 the network is never used, and a model missing from
 *   the cache is an error that says what is missing and where it looked.
 * Errors: GPTC_ERR_ARG for a name that is neither a folder nor a valid id, or a
 * bad revision; GPTC_ERR_IO for a missing model, an HTTP or network error.
 * *dir_out is malloc'ed; the caller frees it. Blocks while downloading.
 */
gptc_status gptc_hub_resolve(const char *name_or_dir, const char *revision, char **dir_out);

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

/* When beam search stops (transformers' early_stopping). */
typedef enum {
    /* Once the best running beam, scored at the current length, cannot beat
     * the worst of the num_beams finished hypotheses (a heuristic). */
    GPTC_EARLY_STOPPING_FALSE = 0,
    /* As soon as num_beams hypotheses are finished. */
    GPTC_EARLY_STOPPING_TRUE = 1,
    /* Only when no better hypothesis can come (with length_penalty > 0, the
     * running beams are scored as if they reached the maximum length). */
    GPTC_EARLY_STOPPING_NEVER = 2,
} gptc_early_stopping;

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
    /* Beam search, with transformers' semantics (see gptc_generate_beams): */
    int32_t num_beams;      /* 1 .. 1024; 1: no beam search */
    double length_penalty;  /* a finished hypothesis scores sum(log p) / new_len^length_penalty */
    gptc_early_stopping early_stopping;
    int32_t num_return_sequences; /* 1 .. num_beams: how many gptc_generate_beams returns */
    /* OpenAI's penalties (not transformers' repetition_penalty): before
     * sampling, the logit of each token t generated so far (the prompt does
     * not count) is lowered by frequency_penalty * count(t) + presence_penalty.
     * Finite; 0: off. Not with beam search (for now). On CUDA the logits
     * of such a sequence come to the host for its pick. */
    float presence_penalty;
    float frequency_penalty;
} gptc_generate_params;

/* Defaults of the model's generation_config.json, else transformers' defaults. */
gptc_generate_params gptc_generate_default_params(const gptc_model *model);

/* Why a sequence ended. */
typedef enum {
    GPTC_FINISH_NONE = 0,    /* still running */
    GPTC_FINISH_EOS,         /* an eos token (part of the output) */
    GPTC_FINISH_STOP_STRING, /* the text reached a stop string */
    GPTC_FINISH_LENGTH,      /* max_new_tokens (or max_length) reached */
    GPTC_FINISH_CANCELLED,   /* the caller cancelled it */
    GPTC_FINISH_ERROR,       /* the engine failed (out of memory, a device error) */
} gptc_finish_reason;

/* Called with each new token id; return non-zero to stop generating. */
typedef int (*gptc_token_fn)(int32_t id, void *user);

/*
 * Generates a continuation of `prompt`. `tok` may be NULL unless stop strings
 * are given. The generated ids (without the prompt) are returned in *out_ids
 * (malloc'ed) when out_ids is non-NULL. Prompt + max_new_tokens beyond n_ctx is
 * GPTC_ERR_RANGE unless truncate_prompt is set. With num_beams > 1 this is
 * gptc_generate_beams' best sequence; `fn` then sees its ids after the search.
 */
gptc_status gptc_generate(gptc_model *model, const gptc_tokenizer *tok, const int32_t *prompt,
                          size_t n_prompt, const gptc_generate_params *params, gptc_token_fn fn,
                          void *user, int32_t **out_ids, size_t *n_out);

/*
 * Beam search, as transformers' generate() with num_beams > 1 (same logits
 * processors, length penalty, early stopping and stopping on eos or length):
 * the num_return_sequences best finished hypotheses, best first. Their
 * generated ids (without the prompt) are concatenated in *out_ids (malloc'ed,
 * never NULL on success); out_lens (num_return_sequences entries, the
 * caller's) receives each length; out_scores (optional, as many entries) each
 * score, transformers' sequences_scores: the sum of the processed
 * log-probabilities over new_len^length_penalty. With num_beams == 1 this is
 * gptc_generate (greedy or sampling) and the score NAN. With num_beams > 1,
 * stop strings and sampling (do_sample) are GPTC_ERR_UNSUPPORTED. `tok` may be
 * NULL. The beams share the prompt's K/V cache (and that of any common
 * prefix) and are decoded in one pass per step.
 */
gptc_status gptc_generate_beams(gptc_model *model, const gptc_tokenizer *tok, const int32_t *prompt,
                                size_t n_prompt, const gptc_generate_params *params,
                                int32_t **out_ids, size_t *out_lens, float *out_scores);

/* ------------------------------------------------------------------ */
/*
 * Batched generation: many sequences decoded together, each step reading the
 * weights once for all of them. Sequences join and leave between steps
 * (continuous batching); each has its own parameters, seed and stopping
 * rules, and its result is the one gptc_generate gives for it alone (greedy:
 * identical token ids). The K/V cache is one pool of blocks of positions
 * (paged): a sequence holds only the blocks its positions fill, nothing is
 * padded, and a finished or cancelled sequence frees its blocks at once.
 * A gptc_batch is used by one thread at a time.
 */
typedef struct gptc_batch gptc_batch;

typedef struct {
    /* Bytes the K/V cache may take. Each request reserves room for its
     * prompt + max_new_tokens positions when it starts; requests wait until
     * their room is free. 0: room for max_batch sequences of n_positions. */
    uint64_t kv_memory;
    int32_t max_batch;          /* sequences decoded together; 0: 32 */
    int32_t max_prefill_tokens; /* prompt tokens taken into one step (at least one prompt); 0: 2048 */
    /* 1: on CUDA, the decode tokens of a step share tensor-core products
     * once there are 8 or more (the CPU ignores it). Several times faster
     * for large batches of large models, but a sequence's logits then
     * depend on what else is in the batch, in the last bits (as in vLLM):
     * greedy ids can differ from gptc_generate's where two tokens nearly
     * tie. 0 (default): every sequence's logits are bitwise what it gets
     * alone. */
    int32_t fast_decode;
} gptc_batch_params;

gptc_batch_params gptc_batch_default_params(void);

gptc_status gptc_batch_new(gptc_model *model, const gptc_tokenizer *tok, const gptc_batch_params *params,
                           gptc_batch **out);
void gptc_batch_free(gptc_batch *b);

/*
 * Queues a request. Parameters and prompt are checked now, as gptc_generate
 * checks them (beam search is not batched: num_beams must be 1); a request
 * that could never fit in kv_memory is refused (GPTC_ERR_RANGE). *id (> 0)
 * names it in events and gptc_batch_cancel. The parameters are copied.
 */
gptc_status gptc_batch_add(gptc_batch *b, const int32_t *prompt, size_t n_prompt,
                           const gptc_generate_params *params, uint64_t *id);

/* Drops a waiting or running request and frees its cache now; it produces no
 * more events. GPTC_ERR_ARG for an id that is not (any longer) there. */
gptc_status gptc_batch_cancel(gptc_batch *b, uint64_t id);

/* Asks for log-probabilities in request `id`'s events (see below): the
 * chosen token's and those of the n_top (0 .. GPTC_MAX_TOP_LOGPROBS) most
 * likely tokens. Before the request's first step (GPTC_ERR_ARG after, or for
 * an unknown id). Its logits then come to the host at every step. */
#define GPTC_MAX_TOP_LOGPROBS 20
gptc_status gptc_batch_logprobs(gptc_batch *b, uint64_t id, int32_t n_top);

/* What those events report, from one row of logits: the log-softmax of
 * token `id` in *logprob, and the n_top most likely tokens (most likely
 * first, ties: the lower id) in top_ids / top_logprobs (n_top entries, the
 * caller's). Returns how many were written (n_top, or n_vocab if fewer). */
int32_t gptc_logprobs(const float *logits, int32_t n_vocab, int32_t id, int32_t n_top, float *logprob,
                      int32_t *top_ids, float *top_logprobs);

typedef struct {
    uint64_t id;
    int32_t token;             /* the new token; -1 when none (max_new_tokens 0) */
    gptc_finish_reason finish; /* GPTC_FINISH_NONE while the request goes on */
    /* With gptc_batch_logprobs (else NAN, 0, NULL): the token's
     * log-probability under the model - the log-softmax of its raw logits,
     * before temperature and the other processors (what vLLM reports) - and
     * the n_top most likely tokens with theirs, most likely first (ties: the
     * lower id). The arrays stay valid until the next step. */
    float logprob;
    int32_t n_top;
    const int32_t *top_ids;
    const float *top_logprobs;
} gptc_batch_event;

/*
 * One step: starts waiting requests that fit (their prompts are processed in
 * this step's pass), then gives every running request its next token. The
 * events (one per request that moved, in no particular order) stay valid
 * until the next call. A request whose event has a finish reason is gone.
 */
gptc_status gptc_batch_step(gptc_batch *b, const gptc_batch_event **events, size_t *n_events);

typedef struct {
    size_t running, waiting;
    size_t kv_positions_used;  /* positions held by running requests' blocks */
    size_t kv_positions_total; /* the whole cache */
    size_t kv_positions_reserved; /* what running requests may still grow to */
} gptc_batch_stats;
gptc_batch_stats gptc_batch_get_stats(const gptc_batch *b);

/* Called with each new token of prompt `index`; non-zero stops that prompt. */
typedef int (*gptc_batch_token_fn)(size_t index, int32_t id, void *user);

/*
 * Generates for n prompts with the same parameters through a gptc_batch:
 * out_ids[i] (malloc'ed, never NULL on success) and out_lens[i] receive
 * prompt i's generated ids, exactly what gptc_generate returns for it.
 * `fn` (optional) sees the tokens as they come. `bparams` may be NULL.
 */
gptc_status gptc_generate_batch(gptc_model *model, const gptc_tokenizer *tok, size_t n,
                                const int32_t *const *prompts, const size_t *n_prompts,
                                const gptc_generate_params *params, const gptc_batch_params *bparams,
                                gptc_batch_token_fn fn, void *user, int32_t **out_ids, size_t *out_lens);

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
