/*
 * generate.c - the generation loop and perplexity, on top of sessions.
 *
 * gptc_generate follows transformers' generate(): prefill the prompt, then per
 * step run the logits processors in generate()'s order, pick the next token
 * (argmax, or a seeded categorical draw), and stop at eos, at a stop string,
 * or after max_new_tokens. The eos / stop-string token is part of the output,
 * as in transformers. With num_beams > 1 it hands over to beam search
 * (beam.c) and returns the best hypothesis.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "generate.h"
#include "internal.h"
#include "model.h"
#include "sampling.h"
#include "sequence.h"

gptc_generate_params gptc_generate_default_params(const gptc_model *m) {
    const gptc_gen_defaults *g = &m->gen;
    gptc_generate_params p = {
        .max_new_tokens = g->max_new_tokens >= 0 ? g->max_new_tokens : -1,
        .max_length = g->max_length >= 0 ? g->max_length : 20,
        .min_new_tokens = g->min_new_tokens >= 0 ? g->min_new_tokens : 0,
        .do_sample = g->do_sample,
        .temperature = isnan(g->temperature) ? 1.0f : g->temperature,
        .top_k = g->top_k >= 0 ? g->top_k : 50,
        .top_p = isnan(g->top_p) ? 1.0f : g->top_p,
        .repetition_penalty = isnan(g->repetition_penalty) ? 1.0f : g->repetition_penalty,
        .no_repeat_ngram_size = g->no_repeat_ngram_size >= 0 ? g->no_repeat_ngram_size : 0,
        .seed = 0,
        .n_eos_token_ids = g->n_eos,
        .num_beams = g->num_beams > 0 ? g->num_beams : 1,
        .length_penalty = isnan(g->length_penalty) ? 1.0 : g->length_penalty,
        .early_stopping = g->early_stopping >= 0 ? (gptc_early_stopping)g->early_stopping
                                                 : GPTC_EARLY_STOPPING_FALSE,
        .num_return_sequences = g->num_return_sequences > 0 ? g->num_return_sequences : 1,
    };
    memcpy(p.eos_token_ids, g->eos_ids, sizeof p.eos_token_ids);
    return p;
}

static gptc_status check_params(const gptc_generate_params *p, const gptc_model *m,
                                const gptc_tokenizer *tok) {
    const gptc_config *c = &m->cfg;
    if (p->max_new_tokens < -1)
        return gptc_fail(GPTC_ERR_ARG, "max_new_tokens: %d is negative", p->max_new_tokens);
    if (p->max_new_tokens == -1 && p->max_length < 0)
        return gptc_fail(GPTC_ERR_ARG, "max_length: %d is negative", p->max_length);
    if (p->min_new_tokens < 0)
        return gptc_fail(GPTC_ERR_ARG, "min_new_tokens: %d is negative", p->min_new_tokens);
    if (!(p->temperature >= 0) || isinf(p->temperature))
        return gptc_fail(GPTC_ERR_ARG, "temperature: %g must be a finite number >= 0",
                         (double)p->temperature);
    if (p->top_k < 0) return gptc_fail(GPTC_ERR_ARG, "top_k: %d is negative", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return gptc_fail(GPTC_ERR_ARG, "top_p: %g is outside (0, 1]", (double)p->top_p);
    if (!(p->repetition_penalty > 0) || isinf(p->repetition_penalty))
        return gptc_fail(GPTC_ERR_ARG, "repetition_penalty: %g must be a finite number > 0",
                         (double)p->repetition_penalty);
    if (p->no_repeat_ngram_size < 0)
        return gptc_fail(GPTC_ERR_ARG, "no_repeat_ngram_size: %d is negative", p->no_repeat_ngram_size);
    if (p->n_eos_token_ids < 0 || p->n_eos_token_ids > GPTC_MAX_EOS)
        return gptc_fail(GPTC_ERR_ARG, "n_eos_token_ids: %d is outside [0, %d]", p->n_eos_token_ids,
                         GPTC_MAX_EOS);
    for (int32_t i = 0; i < p->n_eos_token_ids; i++)
        if (p->eos_token_ids[i] < 0 || p->eos_token_ids[i] >= c->n_vocab)
            return gptc_fail(GPTC_ERR_ARG, "eos_token_ids: %d is outside [0, %d)", p->eos_token_ids[i],
                             c->n_vocab);
    if (p->n_stop_strings && !p->stop_strings)
        return gptc_fail(GPTC_ERR_ARG, "stop_strings: NULL with n_stop_strings %zu", p->n_stop_strings);
    for (size_t i = 0; i < p->n_stop_strings; i++)
        if (!p->stop_strings[i] || !p->stop_strings[i][0])
            return gptc_fail(GPTC_ERR_ARG, "stop string %zu is empty", i + 1);
    /* Every beam is a sequence of each pass: the bound keeps a typo from
     * asking for thousands of them. */
    if (p->num_beams < 1 || p->num_beams > 1024)
        return gptc_fail(GPTC_ERR_ARG, "num_beams: %d is outside [1, 1024]", p->num_beams);
    if (p->num_return_sequences < 1 || p->num_return_sequences > p->num_beams)
        return gptc_fail(GPTC_ERR_ARG, "num_return_sequences: %d is outside [1, num_beams = %d]",
                         p->num_return_sequences, p->num_beams);
    if (!isfinite(p->length_penalty))
        return gptc_fail(GPTC_ERR_ARG, "length_penalty: %g is not a finite number", p->length_penalty);
    if (p->early_stopping != GPTC_EARLY_STOPPING_FALSE && p->early_stopping != GPTC_EARLY_STOPPING_TRUE &&
        p->early_stopping != GPTC_EARLY_STOPPING_NEVER)
        return gptc_fail(GPTC_ERR_ARG, "early_stopping: %d is not false (0), true (1) or never (2)",
                         (int)p->early_stopping);
    if (p->num_beams > 1 && p->do_sample && p->temperature != 0.0f)
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "do_sample: beam sampling (do_sample with num_beams > 1) is not supported");
    if (p->num_beams > 1 && p->n_stop_strings)
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "stop_strings: not supported with beam search (num_beams > 1)");
    if (p->n_stop_strings && !tok)
        return gptc_fail(GPTC_ERR_ARG, "stop strings need a tokenizer");
    if (!isfinite(p->presence_penalty))
        return gptc_fail(GPTC_ERR_ARG, "presence_penalty: %g is not a finite number", (double)p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return gptc_fail(GPTC_ERR_ARG, "frequency_penalty: %g is not a finite number", (double)p->frequency_penalty);
    if (p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) {
        const char *which = p->presence_penalty != 0.0f ? "presence_penalty" : "frequency_penalty";
        /* The device samplers leave them to the host (gen_seq_pick), beam
         * search does not apply them (yet). */
        if (p->num_beams > 1)
            return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: not supported with beam search (num_beams > 1)", which);
    }
    return GPTC_OK;
}

gptc_status gptc_generate_prepare(const gptc_model *m, const gptc_tokenizer *tok,
                                  const gptc_generate_params *p, const int32_t **prompt_io,
                                  size_t *n_prompt_io, int64_t *max_new_out) {
    const gptc_config *c = &m->cfg;
    const int32_t *prompt = *prompt_io;
    size_t n_prompt = *n_prompt_io;
    *max_new_out = 0;
    if (!p) return gptc_fail(GPTC_ERR_ARG, "generate: params is NULL");
    gptc_status st = check_params(p, m, tok);
    if (st != GPTC_OK) return st;
    if (n_prompt == 0 || !prompt) return gptc_fail(GPTC_ERR_ARG, "prompt: empty");
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->n_vocab)
            return gptc_fail(GPTC_ERR_RANGE, "prompt: token id %d is out of range [0, %d)", prompt[i],
                             c->n_vocab);
    int64_t max_new = p->max_new_tokens;
    if (max_new < 0) {
        max_new = (int64_t)p->max_length - (int64_t)n_prompt;
        if (max_new <= 0)
            return gptc_fail(GPTC_ERR_RANGE,
                             "prompt: %zu tokens already reach max_length %d; set max_new_tokens",
                             n_prompt, p->max_length);
    }
    if (max_new == 0) return GPTC_OK;
    if (max_new >= c->n_ctx)
        return gptc_fail(GPTC_ERR_RANGE, "max_new_tokens: %lld leaves no room for the prompt in n_positions = %d",
                         (long long)max_new, c->n_ctx);
    if ((int64_t)n_prompt + max_new > c->n_ctx) {
        if (!p->truncate_prompt)
            return gptc_fail(GPTC_ERR_RANGE,
                             "prompt: %zu tokens + max_new_tokens %lld exceed n_positions = %d (truncation is opt-in)",
                             n_prompt, (long long)max_new, c->n_ctx);
        size_t keep = (size_t)(c->n_ctx - max_new);
        *prompt_io = prompt + (n_prompt - keep);
        *n_prompt_io = keep;
    }
    *max_new_out = max_new;
    return GPTC_OK;
}

/* gptc_generate with num_beams > 1: the best hypothesis of a beam search.
 * `fn` sees its ids once the search is over (beams cannot stream: the best
 * one is known only at the end); its stop request cuts the output there. */
static gptc_status generate_beam_best(gptc_model *m, const gptc_tokenizer *tok,
                                      const int32_t *prompt, size_t n_prompt,
                                      const gptc_generate_params *p, gptc_token_fn fn, void *user,
                                      int32_t **out_ids, size_t *n_out) {
    size_t *lens = calloc((size_t)p->num_return_sequences, sizeof *lens);
    if (!lens) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    int32_t *ids = NULL;
    gptc_status st = gptc_generate_beams(m, tok, prompt, n_prompt, p, &ids, lens, NULL);
    if (st == GPTC_OK) {
        size_t k = 0;
        while (k < lens[0]) {
            int stop = fn && fn(ids[k], user);
            k++;
            if (stop) break;
        }
        if (n_out) *n_out = k;
        if (out_ids) *out_ids = ids;
        else free(ids);
    }
    free(lens);
    return st;
}

gptc_status gptc_generate(gptc_model *m, const gptc_tokenizer *tok, const int32_t *prompt,
                          size_t n_prompt, const gptc_generate_params *p, gptc_token_fn fn,
                          void *user, int32_t **out_ids, size_t *n_out) {
    if (out_ids) *out_ids = NULL;
    if (n_out) *n_out = 0;
    if (p && p->num_beams > 1) /* gptc_generate_beams checks everything */
        return generate_beam_best(m, tok, prompt, n_prompt, p, fn, user, out_ids, n_out);
    const gptc_config *c = &m->cfg;
    int64_t max_new = 0;
    gptc_status st = gptc_generate_prepare(m, tok, p, &prompt, &n_prompt, &max_new);
    if (st != GPTC_OK) return st;
    if (max_new == 0) return GPTC_OK;
    int V = c->n_vocab;
    gptc_session *s = NULL;
    gen_seq g;
    if ((st = gen_seq_init(&g, m, tok, p, prompt, n_prompt, max_new, 0)) != GPTC_OK) return st;
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = gptc_session_new(m, (int32_t)(n_prompt + (size_t)max_new), &s)) != GPTC_OK) goto done;
    /* A backend with its own sampler runs the processors and the draw where
     * the logits are (on a GPU only the ids cross); else they run here.
     * GPTC_HOST_SAMPLING=1 forces the host path, to compare the two. */
    int on_device = gptc_session_can_sample(s) && !getenv("GPTC_HOST_SAMPLING") && gen_seq_device_can_pick(&g);
    int32_t next = 0;
    if (on_device) {
        if ((st = gptc_session_sample_init(s, p, NULL, 0)) != GPTC_OK) goto done;
        if ((st = gptc_session_eval_sample(s, prompt, n_prompt, &next)) != GPTC_OK) goto done;
    } else if ((st = gptc_session_eval(s, prompt, n_prompt, 1, logits)) != GPTC_OK) goto done;
    for (;;) {
        if (!on_device) next = gen_seq_pick(&g, logits);
        gptc_finish_reason why = gen_seq_push(&g, next);
        if (why == GPTC_FINISH_ERROR) {
            st = GPTC_ERR_NOMEM;
            goto done;
        }
        /* The caller sees every token, the one that ends the sequence too. */
        if ((fn && fn(next, user)) || why != GPTC_FINISH_NONE) break;
        if (on_device) st = gptc_session_eval_sample(s, &next, 1, &next);
        else st = gptc_session_eval(s, &next, 1, 1, logits);
        if (st != GPTC_OK) goto done;
    }
    size_t k = gen_seq_new_tokens(&g);
    if (out_ids) {
        *out_ids = malloc((k ? k : 1) * sizeof **out_ids);
        if (!*out_ids) {
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            goto done;
        }
        memcpy(*out_ids, g.seq + n_prompt, k * sizeof **out_ids);
    }
    if (n_out) *n_out = k;
done:
    gptc_session_free(s);
    gen_seq_free(&g);
    free(logits);
    return st;
}

/* Mean negative log-likelihood of targets[i] under logits row i, i < n. */
static double mean_nll(const float *logits, const int32_t *targets, size_t n, int V) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        const float *row = logits + i * (size_t)V;
        double mx = row[0];
        for (int v = 1; v < V; v++)
            if (row[v] > mx) mx = row[v];
        double z = 0;
        for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
        sum += mx + log(z) - (double)row[targets[i]];
    }
    return sum / (double)n;
}

gptc_status gptc_perplexity(gptc_model *m, const int32_t *ids, size_t n, int32_t stride, double *ppl) {
    const gptc_config *c = &m->cfg;
    *ppl = NAN;
    if (n < 2) return gptc_fail(GPTC_ERR_ARG, "perplexity: the text has %zu tokens, at least 2 needed", n);
    if (stride <= 0 || stride > c->n_ctx)
        return gptc_fail(GPTC_ERR_ARG, "stride: %d is outside [1, n_positions = %d]", stride, c->n_ctx);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->n_vocab)
            return gptc_fail(GPTC_ERR_RANGE, "token id %d is out of range [0, %d)", ids[i], c->n_vocab);
    size_t max_len = (size_t)c->n_ctx, V = (size_t)c->n_vocab;
    gptc_session *s = NULL;
    gptc_status st = gptc_session_new(m, (int32_t)(n < max_len ? n : max_len), &s);
    if (st != GPTC_OK) return st;
    float *logits = NULL;
    double nll_sum = 0;
    size_t n_tokens = 0, prev_end = 0;
    /* The recipe of the transformers documentation ("Perplexity of
     * fixed-length models"): windows of n_positions tokens, `stride` apart;
     * each scores only the tokens not scored by the window before. Its
     * weighting (valid labels - 1 per window) is kept as written so the
     * numbers agree with it exactly. */
    for (size_t begin = 0; begin < n; begin += (size_t)stride) {
        size_t end = begin + max_len < n ? begin + max_len : n;
        size_t len = end - begin, trg = end - prev_end;
        size_t first = len - trg > 1 ? len - trg : 1; /* first target index in the window */
        size_t n_logits = len - first + 1;            /* rows for positions first-1 .. len-1 */
        if (!logits) logits = malloc(max_len * V * sizeof *logits);
        if (!logits) {
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
            break;
        }
        gptc_session_reset(s);
        if ((st = gptc_session_eval(s, ids + begin, len, n_logits, logits)) != GPTC_OK) break;
        double nll = mean_nll(logits, ids + begin + first, len - first, (int)V);
        size_t w = trg - 1;
        nll_sum += nll * (double)w;
        n_tokens += w;
        prev_end = end;
        if (end == n) break;
    }
    if (st == GPTC_OK) {
        if (n_tokens == 0) st = gptc_fail(GPTC_ERR_ARG, "perplexity: no token was scored");
        else *ppl = exp(nll_sum / (double)n_tokens);
    }
    free(logits);
    gptc_session_free(s);
    return st;
}
