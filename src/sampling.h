/*
 * sampling.h - logits processors and samplers, with the semantics of
 * transformers' generate(): each function below mirrors one processor class
 * (named in its comment) and is applied in generate()'s order:
 * repetition penalty, no-repeat-ngram, min-new-tokens, then (sampling only)
 * temperature, top-k, top-p.
 */
#ifndef GPTC_SAMPLING_H
#define GPTC_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

/* Scratch for sorting a vocabulary's scores. */
typedef struct {
    float score;
    int32_t id;
} scored_id;

/* RepetitionPenaltyLogitsProcessor: every distinct token of seq, once.
 * `seen` is scratch of V bytes, all zero on entry and on return. */
void proc_repetition_penalty(float *scores, const int32_t *seq, size_t n, float penalty,
                             unsigned char *seen);
/* OpenAI's presence and frequency penalties (no transformers class): each of
 * the n distinct ids, seen counts[id] times, loses
 * counts[id] * frequency + presence. */
void proc_presence_frequency(float *scores, const int32_t *counts, const int32_t *distinct, size_t n,
                             float presence, float frequency);
/* NoRepeatNGramLogitsProcessor */
void proc_no_repeat_ngram(float *scores, const int32_t *seq, size_t n, int ngram);
/* TemperatureLogitsWarper */
void warp_temperature(float *scores, int V, float temperature);
/* TopKLogitsWarper (min_tokens_to_keep = 1) */
void warp_top_k(float *scores, int V, int top_k, scored_id *scratch);
/* TopPLogitsWarper (min_tokens_to_keep = 1); scratch of V entries. */
void warp_top_p(float *scores, int V, float top_p, scored_id *scratch);
/* torch.argmax: the first index of the maximum. */
int32_t sample_argmax(const float *scores, int V);
/* log_softmax(scores)[id] in *lp, and the k most likely ids (ties: the
 * lower id first) with their log-probabilities, most likely first; returns
 * how many (k, or V if smaller). */
int sample_logprobs(const float *scores, int V, int32_t id, int k, float *lp, int32_t *top_ids,
                    float *top_lps);
/* softmax + multinomial with the uniform variate u in [0, 1). */
int32_t sample_categorical(const float *scores, int V, double u);
/* The uniform variate for step `step` of a stream seeded with `seed`. */
double sample_uniform(uint64_t seed, uint64_t step);

#endif
