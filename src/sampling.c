/*
 * sampling.c - logits processors and samplers (see sampling.h).
 *
 * Filtered tokens are set to -INFINITY, as transformers' filter_value, so a
 * later processor or the sampler never sees them. The random stream is
 * counter-based (one splitmix64 value per step), so a seed reproduces the same
 * tokens whatever the thread count or backend.
 */
#include "sampling.h"

#include <math.h>
#include <stdlib.h>

#include "internal.h"

void proc_repetition_penalty(float *scores, const int32_t *seq, size_t n, float penalty,
                             unsigned char *seen) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = seq[i];
        if (seen[id]) continue;
        seen[id] = 1;
        float s = scores[id];
        scores[id] = s < 0 ? s * penalty : s / penalty;
    }
    for (size_t i = 0; i < n; i++) seen[seq[i]] = 0;
}

void proc_presence_frequency(float *scores, const int32_t *counts, const int32_t *distinct, size_t n,
                             float presence, float frequency) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = distinct[i];
        scores[id] -= (float)counts[id] * frequency + presence;
    }
}

void proc_no_repeat_ngram(float *scores, const int32_t *seq, size_t n, int ngram) {
    if (ngram <= 0 || n + 1 < (size_t)ngram) return;
    size_t k = (size_t)ngram - 1; /* the prefix that the next token would extend */
    const int32_t *tail = seq + n - k;
    for (size_t i = 0; i + k < n; i++) {
        size_t j = 0;
        while (j < k && seq[i + j] == tail[j]) j++;
        if (j == k) scores[seq[i + k]] = -INFINITY;
    }
}

void warp_temperature(float *scores, int V, float temperature) {
    for (int i = 0; i < V; i++) scores[i] /= temperature;
}

/* Descending by score; ties by index, so the order is total and reproducible. */
static int cmp_desc(const void *a, const void *b) {
    const scored_id *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The finite scores, sorted by descending score; returns the count. */
static int sorted_finite(const float *scores, int V, scored_id *out) {
    int n = 0;
    for (int i = 0; i < V; i++)
        if (scores[i] > -INFINITY) out[n++] = (scored_id){scores[i], i};
    qsort(out, (size_t)n, sizeof *out, cmp_desc);
    return n;
}

/* Sift-down for a min-heap of scores (the root is the smallest kept). */
static void heap_down(float *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m]) m = l;
        if (r < n && h[r] < h[m]) m = r;
        if (m == i) return;
        float t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

void warp_top_k(float *scores, int V, int top_k, scored_id *scratch) {
    if (top_k <= 0 || top_k >= V) return;
    /* The k-th largest score through a min-heap of the k largest seen:
     * O(V log k) rather than a sort of the whole vocabulary. */
    float *heap = (float *)scratch; /* V scored_id hold at least V floats */
    int n = 0;
    for (int i = 0; i < V; i++) {
        float s = scores[i];
        if (n < top_k) {
            heap[n++] = s;
            if (n == top_k)
                for (int j = n / 2 - 1; j >= 0; j--) heap_down(heap, n, j);
        } else if (s > heap[0]) {
            heap[0] = s;
            heap_down(heap, n, 0);
        }
    }
    /* transformers removes scores strictly below the k-th largest, so ties
     * with the k-th survive. */
    float kth = heap[0];
    for (int i = 0; i < V; i++)
        if (scores[i] < kth) scores[i] = -INFINITY;
}

void warp_top_p(float *scores, int V, float top_p, scored_id *scratch) {
    if (!(top_p < 1.0f)) return;
    int n = sorted_finite(scores, V, scratch);
    if (n <= 1) return;
    double mx = scratch[0].score, total = 0;
    for (int i = 0; i < n; i++) total += exp((double)scratch[i].score - mx);
    /* transformers sorts ascending and drops tokens whose cumulative
     * probability is <= 1 - top_p; from the top that keeps the smallest prefix
     * whose mass reaches top_p, i.e. everything whose ascending cumulative sum
     * exceeds 1 - top_p. Walk ascending to apply the same test. */
    double cum = 0, cut = 1.0 - (double)top_p;
    for (int i = n - 1; i >= 1; i--) { /* the top token is always kept */
        cum += exp((double)scratch[i].score - mx) / total;
        if (cum <= cut) scores[scratch[i].id] = -INFINITY;
        else break;
    }
}

int32_t sample_argmax(const float *scores, int V) {
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (scores[i] > scores[best]) best = i;
    return best;
}

/* sum(exp(scores - max)) in double, and the max: softmax's denominator. */
static double softmax_total(const float *scores, int V, float *max) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (scores[i] > mx) mx = scores[i];
    double total = 0;
    for (int i = 0; i < V; i++)
        if (scores[i] > -INFINITY) total += exp((double)(scores[i] - mx));
    *max = mx;
    return total;
}

int sample_logprobs(const float *scores, int V, int32_t id, int k, float *lp, int32_t *top_ids,
                    float *top_lps) {
    float mx;
    double total = softmax_total(scores, V, &mx);
    double lse = (double)mx + log(total);
    *lp = (float)((double)scores[id] - lse);
    /* k is small (<= 20): insertion into a sorted list beats sorting V. */
    int n = 0;
    for (int i = 0; i < V && k > 0; i++) {
        float s = scores[i];
        if (n == k && !(s > scores[top_ids[n - 1]])) continue;
        int at = n < k ? n++ : n - 1;
        while (at > 0 && s > scores[top_ids[at - 1]]) {
            top_ids[at] = top_ids[at - 1];
            at--;
        }
        top_ids[at] = i;
    }
    for (int i = 0; i < n; i++) top_lps[i] = (float)((double)scores[top_ids[i]] - lse);
    return n;
}

int32_t sample_categorical(const float *scores, int V, double u) {
    float mx;
    double total = softmax_total(scores, V, &mx);
    double target = u * total, cum = 0;
    int32_t last = -1;
    for (int i = 0; i < V; i++) {
        if (!(scores[i] > -INFINITY)) continue;
        cum += exp((double)(scores[i] - mx));
        last = i;
        if (cum > target) return i;
    }
    return last >= 0 ? last : sample_argmax(scores, V);
}

double sample_uniform(uint64_t seed, uint64_t step) {
    uint64_t r = gptc_splitmix64(gptc_splitmix64(seed) ^ (step * 0xd1b54a32d192ed03ull));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}
