/*
 * sequence.h - one sequence's generation state: the tokens so far, the
 * logits processors and the pick of the next token, and the stopping rules
 * (eos, stop strings, length), with transformers generate()'s semantics.
 *
 * gptc_generate runs one of these over a session; the batch engine runs one
 * per request over the shared K/V cache. Not part of the API.
 */
#ifndef GPTC_SEQUENCE_H
#define GPTC_SEQUENCE_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"
#include "sampling.h"

typedef struct {
    gptc_generate_params p; /* stop strings: copies owned here when `own` */
    const gptc_tokenizer *tok;
    int V;
    int32_t *seq; /* prompt then generated ids: n of n_prompt + max_new */
    size_t n, n_prompt;
    int64_t max_new;
    unsigned char *seen;
    scored_id *scratch;
    int32_t *counts;   /* presence/frequency penalties: times each id was generated */
    int32_t *distinct; /* ... and the ids generated, each once */
    size_t n_distinct;
    char *text; /* the sequence's bytes, for stop strings */
    size_t text_len, text_cap;
    int own;
} gen_seq;

/*
 * Starts a sequence for a prompt gptc_generate_prepare accepted (max_new >
 * 0). With copy_params the parameters' stop strings are copied, so the
 * caller's may go before the sequence ends.
 */
gptc_status gen_seq_init(gen_seq *g, const gptc_model *m, const gptc_tokenizer *tok,
                         const gptc_generate_params *p, const int32_t *prompt, size_t n_prompt,
                         int64_t max_new, int copy_params);
void gen_seq_free(gen_seq *g);

/* Tokens generated so far. */
static inline size_t gen_seq_new_tokens(const gen_seq *g) { return g->n - g->n_prompt; }

/* The processors, in generate()'s order, on `logits` (changed in place), then
 * the next token: argmax, or the seeded draw of this step. OpenAI's presence
 * and frequency penalties come right after the repetition penalty, as
 * vLLM applies them. */
int32_t gen_seq_pick(gen_seq *g, float *logits);

/* 1 when this step's gen_seq_pick is the argmax of the logits as they come
 * (greedy, and no processor changes them): the backend may pick it. */
int gen_seq_pick_is_argmax(const gen_seq *g);

/* 1 when a backend's sampler (eval_sample's processors and draw) can make
 * every pick of this sequence: no presence/frequency penalties, which only
 * gen_seq_pick applies. */
int gen_seq_device_can_pick(const gen_seq *g);
/* 1 when a backend's sampler can make every pick and some pick needs more
 * than a plain argmax. */
int gen_seq_wants_sampler(const gen_seq *g);

/*
 * Appends `next` and says whether the sequence ends with it: GPTC_FINISH_EOS,
 * _STOP_STRING, _LENGTH (max_new reached), or GPTC_FINISH_NONE to go on.
 * GPTC_FINISH_ERROR (out of memory) records the error.
 */
gptc_finish_reason gen_seq_push(gen_seq *g, int32_t next);

#endif
