/*
 * backend.h - the private interface every compute backend implements.
 *
 * A backend owns the model's weights in its own form (the CPU backend uses the
 * fp32 arena as loaded; CUDA uploads fp16/bf16/fp32 copies) and each
 * session's K/V cache and scratch. session.c checks arguments and dispatches;
 * backends may assume ids are in range and the cache has room.
 */
#ifndef GPTC_BACKEND_H
#define GPTC_BACKEND_H

#include "gptc.h"
#include "model.h"

struct gptc_session {
    gptc_model *model;
    int32_t max_len, len;
    void *impl; /* the backend's per-session state */
};

/*
 * One forward pass of the batch engine over its paged K/V cache: tokens of
 * any number of sequences (a whole prompt, or one new token each), each at
 * its own position. A sequence's position p lives in block
 * tables[seq][p / block_size], row p % block_size; blocks are handed out by
 * the engine (kvblocks.c) and may be shared between sequences (a common
 * prefix) as long as nobody writes them.
 */
typedef struct {
    int32_t n_tokens;
    const int32_t *ids, *pos, *seq; /* per token */
    const int32_t *const *tables;   /* per sequence */
    int32_t n_logits;
    const int32_t *logit_rows; /* tokens whose logits are wanted, in output order */
    /* Optional (NULL: every row's logits to the host): per logit row, 1 to
     * get its argmax in next[i] (sample_argmax's choice) instead of its
     * logits, which it need not write. A greedy batch's logits need not
     * leave the device: 6.4 MB a step at batch 32, and the host's argmax. */
    const uint8_t *argmax_only;
    int32_t *next;
    /* 1: tokens of one-token (or short) segments may share products that
     * sum in another order than a session's (tensor cores): faster, but a
     * token's logits then depend on the pass (gptc_batch_params.fast_decode). */
    int32_t fast_decode;
    /* Optional (NULL: none): per logit row, a sampler from kv_sampler_new,
     * or NULL. A row with one gets its next token drawn on the backend into
     * next[i] (generate()'s processors and sampler, as eval_sample), its
     * logits not written. Its first pick starts from the history the
     * sampler was made with; each later one first appends the row's token. */
    void *const *samplers;
    /* Optional (NULL: as far as each sequence's highest position in the
     * pass): per sequence, how many entries its table has. */
    const int32_t *n_table;
    /* 1: the caller expects to ask next for this pass's successor - the
     * same sequences (some may leave), a token each: this pass's picks, one
     * position on. A backend may start it before it is asked for (CUDA:
     * greedy decode passes, launched on the device's picks) where each
     * table has the next position's block (n_table). */
    int32_t continues;
} gptc_pass;

typedef struct gptc_backend_ops {
    const char *name;
    /* Prepares the model's weights (m->backend_state); may fail for lack of a
     * device or of memory, with a message that says so. */
    gptc_status (*model_init)(gptc_model *m, gptc_dtype dtype);
    void (*model_free)(gptc_model *m);
    gptc_status (*session_init)(gptc_session *s);
    void (*session_free)(gptc_session *s);
    /*
     * Appends n tokens at position s->len (the caller advances s->len) and
     * writes the logits of the last n_logits positions to host memory.
     */
    gptc_status (*eval)(gptc_session *s, const int32_t *ids, int n, int n_logits, float *logits);
    /*
     * Optional: appends one token and returns the greedy next token without
     * the logits leaving the backend. NULL when not implemented.
     */
    gptc_status (*eval_greedy)(gptc_session *s, int32_t id, int32_t *next);
    /*
     * Optional (both or neither): generate()'s logits processors and sampler
     * on the backend, so that only token ids leave it. sample_init takes the
     * parameters (already checked) and the tokens the session holds, which
     * start the history the processors see; eval_sample appends n tokens
     * (to the session and the history) and returns the next token drawn
     * from the last one's logits, step by step as generate() would on the
     * host. A plain eval() in between ends the history: eval_sample then
     * fails until sample_init runs again.
     */
    gptc_status (*sample_init)(gptc_session *s, const gptc_generate_params *p, const int32_t *hist,
                               int n);
    gptc_status (*eval_sample)(gptc_session *s, const int32_t *ids, int n, int32_t *next);
    /*
     * Makes the first src->len positions of dst's K/V cache a copy of src's
     * (same model, dst->max_len >= src->len; the caller sets dst->len), and
     * forgets whatever dst knew of its position or history. For beam search,
     * where a beam continues from another one's sequence.
     */
    gptc_status (*session_copy)(gptc_session *dst, const gptc_session *src);
    /*
     * Optional (all or none): the paged K/V cache of the batch engine.
     * kv_new allocates n_blocks blocks of block_size positions (all layers,
     * K and V); kv_copy makes the first n_pos rows of block dst a copy of
     * block src's; kv_eval runs a pass and writes the logits of its
     * logit_rows to host memory, [n_logits][n_vocab] (a row marked
     * argmax_only: its argmax in next instead). A token's results do not
     * depend on the other tokens of the pass.
     */
    gptc_status (*kv_new)(gptc_model *m, int32_t n_blocks, int32_t block_size, void **kv);
    void (*kv_free)(gptc_model *m, void *kv);
    gptc_status (*kv_copy)(gptc_model *m, void *kv, int32_t dst, int32_t src, int32_t n_pos);
    gptc_status (*kv_eval)(gptc_model *m, void *kv, const gptc_pass *p, float *logits);
    /*
     * Optional (both or neither): a sequence's sampler for kv_eval's passes
     * (gptc_pass.samplers): parameters already checked, presence/frequency
     * penalties zero; hist: the n tokens so far (the prompt); room for
     * max_len tokens of history.
     */
    gptc_status (*kv_sampler_new)(gptc_model *m, void *kv, const gptc_generate_params *p,
                                  const int32_t *hist, int32_t n, int32_t max_len, void **sampler);
    void (*kv_sampler_free)(gptc_model *m, void *kv, void *sampler);
} gptc_backend_ops;

/* session.c's checked entry points to the optional sampler ops. */
int gptc_session_can_sample(const gptc_session *s);
gptc_status gptc_session_sample_init(gptc_session *s, const gptc_generate_params *p,
                                     const int32_t *hist, size_t n);
gptc_status gptc_session_eval_sample(gptc_session *s, const int32_t *ids, size_t n, int32_t *next);
/* dst becomes a copy of src (its K/V cache and length). */
gptc_status gptc_session_copy(gptc_session *dst, const gptc_session *src);

extern const gptc_backend_ops gptc_cpu_backend;
#ifdef GPTC_HAVE_CUDA
extern const gptc_backend_ops gptc_cuda_backend;
/* 1 if a usable CUDA device is present (no message recorded either way). */
int gptc_cuda_available(void);
#endif

#endif
