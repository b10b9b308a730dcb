/*
 * sequence.c - one sequence's generation state (see sequence.h).
 */
#include "sequence.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "model.h"

static int text_append(gen_seq *g, const char *p, size_t n) {
    if (g->text_len + n > g->text_cap) {
        size_t cap = g->text_cap ? g->text_cap : 256;
        while (cap < g->text_len + n) cap *= 2;
        char *b = realloc(g->text, cap);
        if (!b) return 0;
        g->text = b;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, p, n);
    g->text_len += n;
    return 1;
}

/* Whether a stop string occurs in the text with its end inside the newest
 * `added` bytes (like transformers' StopStringCriteria, a token may run past
 * the end of the stop string). */
static int hits_stop(const gen_seq *g, size_t added) {
    const gptc_generate_params *p = &g->p;
    for (size_t s = 0; s < p->n_stop_strings; s++) {
        const char *stop = p->stop_strings[s];
        size_t L = strlen(stop);
        if (L > g->text_len) continue;
        size_t first_end = g->text_len - added + 1; /* smallest end that includes a new byte */
        size_t start = first_end >= L ? first_end - L : 0;
        for (size_t i = start; i + L <= g->text_len; i++)
            if (memcmp(g->text + i, stop, L) == 0) return 1;
    }
    return 0;
}

void gen_seq_free(gen_seq *g) {
    if (g->own && g->p.stop_strings) {
        for (size_t i = 0; i < g->p.n_stop_strings; i++) free((char *)g->p.stop_strings[i]);
        free((void *)g->p.stop_strings);
    }
    free(g->seq);
    free(g->seen);
    free(g->scratch);
    free(g->counts);
    free(g->distinct);
    free(g->text);
    memset(g, 0, sizeof *g);
}

gptc_status gen_seq_init(gen_seq *g, const gptc_model *m, const gptc_tokenizer *tok,
                         const gptc_generate_params *p, const int32_t *prompt, size_t n_prompt,
                         int64_t max_new, int copy_params) {
    memset(g, 0, sizeof *g);
    g->p = *p;
    g->tok = tok;
    g->V = m->cfg.n_vocab;
    g->n = g->n_prompt = n_prompt;
    g->max_new = max_new;
    g->own = copy_params;
    if (copy_params && !p->n_stop_strings) g->p.stop_strings = NULL; /* never the caller's */
    if (copy_params && p->n_stop_strings) {
        char **s = calloc(p->n_stop_strings, sizeof *s);
        g->p.stop_strings = (const char **)s;
        if (!s) {
            g->p.n_stop_strings = 0;
            return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < p->n_stop_strings; i++) {
            size_t L = strlen(p->stop_strings[i]) + 1;
            if (!(s[i] = malloc(L))) {
                gen_seq_free(g);
                return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            }
            memcpy(s[i], p->stop_strings[i], L);
        }
    }
    g->seq = malloc((n_prompt + (size_t)max_new) * sizeof *g->seq);
    int sampling = p->do_sample && p->temperature != 0.0f;
    if (p->repetition_penalty != 1.0f) g->seen = calloc((size_t)g->V, 1);
    if (sampling && (p->top_k > 0 || p->top_p < 1.0f)) g->scratch = malloc((size_t)g->V * sizeof *g->scratch);
    int penalized = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (penalized) {
        g->counts = calloc((size_t)g->V, sizeof *g->counts);
        g->distinct = malloc((size_t)max_new * sizeof *g->distinct);
    }
    if (!g->seq || (p->repetition_penalty != 1.0f && !g->seen) || (penalized && (!g->counts || !g->distinct)) ||
        (sampling && (p->top_k > 0 || p->top_p < 1.0f) && !g->scratch)) {
        gen_seq_free(g);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    memcpy(g->seq, prompt, n_prompt * sizeof *g->seq);
    if (p->n_stop_strings)
        for (size_t i = 0; i < n_prompt; i++) {
            size_t len;
            const char *b = gptc_tokenizer_token_bytes(tok, prompt[i], &len);
            if (b && !text_append(g, b, len)) {
                gen_seq_free(g);
                return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            }
        }
    return GPTC_OK;
}

int32_t gen_seq_pick(gen_seq *g, float *logits) {
    const gptc_generate_params *p = &g->p;
    int V = g->V;
    size_t step = gen_seq_new_tokens(g);
    if (p->repetition_penalty != 1.0f) proc_repetition_penalty(logits, g->seq, g->n, p->repetition_penalty, g->seen);
    if (g->counts)
        proc_presence_frequency(logits, g->counts, g->distinct, g->n_distinct, p->presence_penalty,
                                p->frequency_penalty);
    if (p->no_repeat_ngram_size > 0) proc_no_repeat_ngram(logits, g->seq, g->n, p->no_repeat_ngram_size);
    if ((int64_t)step < p->min_new_tokens)
        for (int32_t e = 0; e < p->n_eos_token_ids; e++) logits[p->eos_token_ids[e]] = -INFINITY;
    if (!p->do_sample || p->temperature == 0.0f) return sample_argmax(logits, V);
    if (p->temperature != 1.0f) warp_temperature(logits, V, p->temperature);
    if (p->top_k > 0) warp_top_k(logits, V, p->top_k, g->scratch);
    if (p->top_p < 1.0f) warp_top_p(logits, V, p->top_p, g->scratch);
    return sample_categorical(logits, V, sample_uniform(p->seed, (uint64_t)step));
}

/* 1 when gen_seq_pick, once `step` tokens are generated, is the argmax of
 * the raw logits: greedy, and no processor changes them at that step. */
static int plain_argmax_at(const gen_seq *g, int64_t step) {
    const gptc_generate_params *p = &g->p;
    int greedy = !p->do_sample || p->temperature == 0.0f;
    int banning = step < p->min_new_tokens && p->n_eos_token_ids > 0;
    return greedy && p->repetition_penalty == 1.0f && !g->counts && p->no_repeat_ngram_size <= 0 && !banning;
}

int gen_seq_pick_is_argmax(const gen_seq *g) { return plain_argmax_at(g, (int64_t)gen_seq_new_tokens(g)); }

int gen_seq_device_can_pick(const gen_seq *g) { return !g->counts; }

int gen_seq_wants_sampler(const gen_seq *g) {
    /* Step 0 is the one that bans the most (min_new_tokens). */
    return gen_seq_device_can_pick(g) && !plain_argmax_at(g, 0);
}

gptc_finish_reason gen_seq_push(gen_seq *g, int32_t next) {
    const gptc_generate_params *p = &g->p;
    g->seq[g->n++] = next;
    if (g->counts && g->counts[next]++ == 0) g->distinct[g->n_distinct++] = next;
    for (int32_t e = 0; e < p->n_eos_token_ids; e++)
        if (next == p->eos_token_ids[e]) return GPTC_FINISH_EOS;
    if (p->n_stop_strings) {
        size_t len;
        const char *b = gptc_tokenizer_token_bytes(g->tok, next, &len);
        if (b && !text_append(g, b, len)) {
            gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            return GPTC_FINISH_ERROR;
        }
        if (b && len && hits_stop(g, len)) return GPTC_FINISH_STOP_STRING;
    }
    if ((int64_t)gen_seq_new_tokens(g) >= g->max_new) return GPTC_FINISH_LENGTH;
    return GPTC_FINISH_NONE;
}
