/*
 * test_sampling.c - unit tests of the logits processors and samplers
 * (src/sampling.h) against transformers' semantics, sampling statistics, and
 * seeded reproducibility through the public generate API.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gptc.h"
#include "sampling.h"
#include "check.h"

/* A small deterministic generator for test data (xorshift64*). */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dull;
}
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static double rnd_normal(void) {
    double u = rnd_unit(), v = rnd_unit();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* ---------------------------------------------------------------- */

static void test_repetition_penalty(void) {
    enum { V = 8 };
    float s[V] = {2, -2, 0, 8, 1, -1, 3, 5};
    const float orig[V] = {2, -2, 0, 8, 1, -1, 3, 5};
    unsigned char seen[V] = {0};
    /* 3 appears three times: divided once, not three times. */
    int32_t seq[] = {0, 1, 3, 3, 2, 3, 5, 0};
    proc_repetition_penalty(s, seq, sizeof seq / sizeof seq[0], 2.0f, seen);
    CHECK(s[0] == 1.0f, "positive score divided: %g", s[0]);
    CHECK(s[1] == -4.0f, "negative score multiplied: %g", s[1]);
    CHECK(s[2] == 0.0f, "zero score stays zero: %g", s[2]);
    CHECK(s[3] == 4.0f, "penalty applied once per distinct token: %g", s[3]);
    CHECK(s[5] == -2.0f, "negative score multiplied: %g", s[5]);
    CHECK(s[4] == orig[4] && s[6] == orig[6] && s[7] == orig[7], "unseen tokens untouched");
    int clean = 1;
    for (int i = 0; i < V; i++) clean &= seen[i] == 0;
    CHECK(clean, "seen scratch is all zero on return");

    /* penalty < 1 rewards: positive multiplied up, negative pulled to zero. */
    float t[V] = {2, -2, 0, 8, 1, -1, 3, 5};
    int32_t seq2[] = {0, 1};
    proc_repetition_penalty(t, seq2, 2, 0.5f, seen);
    CHECK(t[0] == 4.0f && t[1] == -1.0f, "penalty 0.5: %g %g", t[0], t[1]);
    /* Empty sequence: nothing changes. */
    float u[V] = {2, -2, 0, 8, 1, -1, 3, 5};
    proc_repetition_penalty(u, seq2, 0, 3.0f, seen);
    CHECK(memcmp(u, orig, sizeof u) == 0, "empty sequence changes nothing");

    /* Random comparison with the direct definition (gather, where, scatter). */
    for (int trial = 0; trial < 200; trial++) {
        int n = (int)(rnd() % 30), Vr = 1 + (int)(rnd() % 20);
        float sc[20], ref[20];
        int32_t sq[30];
        unsigned char sn[20] = {0};
        float pen = (float)(0.2 + 3 * rnd_unit());
        for (int i = 0; i < Vr; i++) sc[i] = ref[i] = (float)rnd_normal();
        for (int i = 0; i < n; i++) sq[i] = (int32_t)(rnd() % (uint64_t)Vr);
        int done[20] = {0};
        for (int i = 0; i < n; i++) {
            if (done[sq[i]]) continue;
            done[sq[i]] = 1;
            ref[sq[i]] = ref[sq[i]] < 0 ? ref[sq[i]] * pen : ref[sq[i]] / pen;
        }
        proc_repetition_penalty(sc, sq, (size_t)n, pen, sn);
        int same = memcmp(sc, ref, (size_t)Vr * sizeof(float)) == 0, zero = 1;
        for (int i = 0; i < Vr; i++) zero &= sn[i] == 0;
        CHECK(same && zero, "repetition penalty random trial %d", trial);
    }
}

/* transformers' NoRepeatNGramLogitsProcessor, directly: every n-gram of seq
 * whose first n-1 tokens equal the last n-1 tokens of seq bans its last. */
static void ngram_reference(const int32_t *seq, int n, int ngram, unsigned char *banned, int V) {
    memset(banned, 0, (size_t)V);
    if (ngram <= 0 || n + 1 < ngram) return;
    int start = n + 1 - ngram;
    for (int i = 0; i + ngram <= n; i++) {
        int match = 1;
        for (int j = 0; j < ngram - 1; j++) match &= seq[i + j] == seq[start + j];
        if (match) banned[seq[i + ngram - 1]] = 1;
    }
}

static int banned_set_is(const float *s, int V, const int *want, int n_want) {
    for (int i = 0; i < V; i++) {
        int should = 0;
        for (int k = 0; k < n_want; k++) should |= want[k] == i;
        if (should != (s[i] == -INFINITY)) return 0;
    }
    return 1;
}

static void test_no_repeat_ngram(void) {
    enum { V = 10 };
    float s[V];
#define RESET() for (int i = 0; i < V; i++) s[i] = (float)i * 0.1f
    {
        RESET();
        int32_t seq[] = {1, 2, 1, 3, 1};
        proc_no_repeat_ngram(s, seq, 5, 2);
        int want[] = {2, 3};
        CHECK(banned_set_is(s, V, want, 2), "n=2 bans the followers of the last token");
    }
    {
        RESET();
        int32_t seq[] = {5, 1, 2, 4, 1, 2, 6, 1, 2};
        proc_no_repeat_ngram(s, seq, 9, 3);
        int want[] = {4, 6};
        CHECK(banned_set_is(s, V, want, 2), "n=3 bans the followers of the last bigram");
    }
    {
        RESET();
        int32_t seq[] = {1, 2, 3, 1, 2};
        proc_no_repeat_ngram(s, seq, 5, 3);
        int want[] = {3};
        CHECK(banned_set_is(s, V, want, 1), "n=3 bans 3 after 1 2");
        RESET();
        proc_no_repeat_ngram(s, seq, 5, 2);
        int want2[] = {3};
        CHECK(banned_set_is(s, V, want2, 1), "n=2 bans 3 after 2");
    }
    {
        RESET();
        int32_t seq[] = {7};
        proc_no_repeat_ngram(s, seq, 1, 2);
        CHECK(banned_set_is(s, V, NULL, 0), "n=2, one token: nothing banned");
        proc_no_repeat_ngram(s, seq, 1, 3);
        CHECK(banned_set_is(s, V, NULL, 0), "n=3, one token: nothing banned");
        int32_t seq2[] = {7, 7};
        proc_no_repeat_ngram(s, seq2, 2, 3);
        CHECK(banned_set_is(s, V, NULL, 0), "n=3, two tokens: nothing banned");
        proc_no_repeat_ngram(s, seq2, 2, 0);
        CHECK(banned_set_is(s, V, NULL, 0), "n=0 is off");
        int32_t seq3[] = {7, 7, 7};
        proc_no_repeat_ngram(s, seq3, 3, 3);
        int want[] = {7};
        CHECK(banned_set_is(s, V, want, 1), "n=3, 7 7 7 bans 7");
    }
    /* Random comparison with the direct definition, n = 1..5. */
    for (int trial = 0; trial < 2000; trial++) {
        int n = 1 + (int)(rnd() % 25), ng = 1 + (int)(rnd() % 5), Vr = 2 + (int)(rnd() % 4);
        int32_t seq[25];
        for (int i = 0; i < n; i++) seq[i] = (int32_t)(rnd() % (uint64_t)Vr);
        float sc[8];
        for (int i = 0; i < Vr; i++) sc[i] = 1.0f;
        unsigned char ban[8];
        ngram_reference(seq, n, ng, ban, Vr);
        proc_no_repeat_ngram(sc, seq, (size_t)n, ng);
        int ok = 1;
        for (int i = 0; i < Vr; i++) ok &= (sc[i] == -INFINITY) == (ban[i] != 0);
        CHECK(ok, "no-repeat-ngram random trial %d (n=%d, ngram=%d)", trial, n, ng);
    }
#undef RESET
}

static void test_temperature_argmax(void) {
    float s[5] = {1, -2, 4, 0, 4};
    warp_temperature(s, 5, 0.5f);
    CHECK(s[0] == 2 && s[1] == -4 && s[2] == 8 && s[3] == 0 && s[4] == 8, "temperature divides");
    warp_temperature(s, 5, 2.0f);
    CHECK(s[0] == 1 && s[2] == 4, "temperature 2");
    CHECK(sample_argmax(s, 5) == 2, "argmax: first index of the maximum");
    float t[3] = {-INFINITY, -INFINITY, -1};
    CHECK(sample_argmax(t, 3) == 2, "argmax skips -inf");
}

static int count_finite(const float *s, int V) {
    int n = 0;
    for (int i = 0; i < V; i++) n += s[i] > -INFINITY;
    return n;
}

static void test_top_k(void) {
    enum { V = 8 };
    scored_id scratch[V];
    const float base[V] = {1, 5, 3, 5, 2, 3, 3, 0};
    float s[V];
    memcpy(s, base, sizeof s);
    warp_top_k(s, V, 3, scratch);
    /* the 3rd largest is 3; every 3 survives with the two 5s */
    int keep3[V] = {0, 1, 1, 1, 0, 1, 1, 0};
    int ok = 1;
    for (int i = 0; i < V; i++) ok &= keep3[i] ? s[i] == base[i] : s[i] == -INFINITY;
    CHECK(ok, "top-k 3 keeps ties with the k-th");
    memcpy(s, base, sizeof s);
    warp_top_k(s, V, 2, scratch);
    CHECK(count_finite(s, V) == 2 && s[1] == 5 && s[3] == 5, "top-k 2 keeps both 5s");
    memcpy(s, base, sizeof s);
    warp_top_k(s, V, 1, scratch);
    CHECK(count_finite(s, V) == 2, "top-k 1 with a tie at the top keeps both");
    memcpy(s, base, sizeof s);
    warp_top_k(s, V, 0, scratch);
    CHECK(memcmp(s, base, sizeof s) == 0, "top-k 0 is off");
    warp_top_k(s, V, V, scratch);
    CHECK(memcmp(s, base, sizeof s) == 0, "top-k V is a no-op");
    warp_top_k(s, V, 100, scratch);
    CHECK(memcmp(s, base, sizeof s) == 0, "top-k > V is a no-op");
    /* Already filtered entries: fewer finite than k keeps them all. */
    float f[V] = {-INFINITY, 2, -INFINITY, 1, -INFINITY, -INFINITY, -INFINITY, 0};
    warp_top_k(f, V, 4, scratch);
    CHECK(count_finite(f, V) == 3, "top-k with fewer finite tokens than k");
    /* Random: exactly the tokens with score >= the k-th largest survive. */
    for (int trial = 0; trial < 500; trial++) {
        int Vr = 1 + (int)(rnd() % 64), k = 1 + (int)(rnd() % 70);
        float sc[64], orig[64], sorted[64];
        for (int i = 0; i < Vr; i++) sc[i] = orig[i] = sorted[i] = (float)(rnd() % 16); /* ties */
        scored_id scr[64];
        warp_top_k(sc, Vr, k, scr);
        /* descending insertion sort */
        for (int i = 1; i < Vr; i++)
            for (int j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
                float x = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = x;
            }
        float kth = k >= Vr ? -INFINITY : sorted[k - 1];
        int good = 1;
        for (int i = 0; i < Vr; i++) good &= orig[i] >= kth ? sc[i] == orig[i] : sc[i] == -INFINITY;
        CHECK(good, "top-k random trial %d", trial);
    }
}

/* transformers' TopPLogitsWarper in double: sort ascending, cumulative
 * softmax, remove entries with cumsum <= 1 - p, always keep the top one. */
typedef struct {
    double s;
    int id;
} dpair;
static int cmp_asc(const void *a, const void *b) {
    const dpair *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? -1 : 1;
    return (x->id < y->id) - (x->id > y->id); /* among ties, higher id first (lower stays on top) */
}
static void top_p_reference(const float *in, int V, double p, unsigned char *keep) {
    dpair *a = malloc((size_t)V * sizeof *a);
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < V; i++) {
        a[i] = (dpair){in[i], i};
        if (in[i] > mx) mx = in[i];
    }
    qsort(a, (size_t)V, sizeof *a, cmp_asc);
    for (int i = 0; i < V; i++) z += exp(a[i].s - mx);
    double cum = 0;
    for (int i = 0; i < V; i++) {
        cum += exp(a[i].s - mx) / z;
        keep[a[i].id] = !(cum <= 1.0 - p) || i == V - 1;
    }
    free(a);
}

static void test_top_p(void) {
    enum { V = 4 };
    scored_id scratch[64];
    /* probabilities 0.5, 0.25, 0.125, 0.125 */
    const float base[V] = {(float)log(0.5), (float)log(0.25), (float)log(0.125), (float)log(0.125)};
    float s[V];
    memcpy(s, base, sizeof s);
    warp_top_p(s, V, 0.6f, scratch);
    CHECK(count_finite(s, V) == 2 && s[0] > -INFINITY && s[1] > -INFINITY, "top-p 0.6 keeps 0.5 + 0.25");
    memcpy(s, base, sizeof s);
    warp_top_p(s, V, 0.4f, scratch);
    CHECK(count_finite(s, V) == 1 && s[0] > -INFINITY, "top-p 0.4 keeps the top only");
    memcpy(s, base, sizeof s);
    warp_top_p(s, V, 1e-6f, scratch);
    CHECK(count_finite(s, V) == 1 && s[0] > -INFINITY, "top-p tiny always keeps the top token");
    memcpy(s, base, sizeof s);
    warp_top_p(s, V, 1.0f, scratch);
    CHECK(memcmp(s, base, sizeof s) == 0, "top-p 1 is off");
    memcpy(s, base, sizeof s);
    warp_top_p(s, V, 0.9f, scratch);
    CHECK(count_finite(s, V) == 4, "top-p 0.9 needs all four (0.875 < 0.9)");
    float one[1] = {3};
    warp_top_p(one, 1, 0.1f, scratch);
    CHECK(one[0] == 3, "top-p with one token keeps it");
    float f[V] = {-INFINITY, 0, -INFINITY, -INFINITY};
    warp_top_p(f, V, 0.5f, scratch);
    CHECK(f[1] == 0 && count_finite(f, V) == 1, "top-p keeps the only finite token");

    /* Random logits, some already filtered, against the reference. */
    for (int trial = 0; trial < 3000; trial++) {
        int Vr = 1 + (int)(rnd() % 64);
        float sc[64], orig[64];
        double scale = 0.1 + 4 * rnd_unit();
        for (int i = 0; i < Vr; i++) {
            sc[i] = (float)(scale * rnd_normal());
            if (rnd() % 8 == 0) sc[i] = -INFINITY;
        }
        if (count_finite(sc, Vr) == 0) sc[0] = 0;
        memcpy(orig, sc, sizeof sc);
        float p = (float)(0.01 + 0.98 * rnd_unit());
        if (trial % 10 == 0) p = 1.0f;
        unsigned char keep[64];
        top_p_reference(orig, Vr, (double)p, keep);
        warp_top_p(sc, Vr, p, scratch);
        int good = 1;
        for (int i = 0; i < Vr; i++) {
            if (orig[i] == -INFINITY) good &= sc[i] == -INFINITY;
            else good &= keep[i] ? sc[i] == orig[i] : sc[i] == -INFINITY;
        }
        CHECK(good, "top-p random trial %d (V=%d, p=%.9g)", trial, Vr, (double)p);
    }
}

/* ---------------------------------------------------------------- */

static void softmax(const float *s, int V, double *p) {
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < V; i++)
        if (s[i] > mx) mx = s[i];
    for (int i = 0; i < V; i++) z += p[i] = s[i] > -INFINITY ? exp(s[i] - mx) : 0;
    for (int i = 0; i < V; i++) p[i] /= z;
}

/* Draws N samples and checks every frequency within 5 sigma of softmax(s);
 * tokens of probability 0 must never appear. */
static void check_frequencies(const char *what, const float *s, int V, uint64_t seed, int N) {
    double p[64];
    long count[64] = {0};
    softmax(s, V, p);
    for (int i = 0; i < N; i++) {
        int32_t t = sample_categorical(s, V, sample_uniform(seed, (uint64_t)i));
        if (t < 0 || t >= V) {
            CHECK(0, "%s: sample %d out of range", what, t);
            return;
        }
        count[t]++;
    }
    for (int i = 0; i < V; i++) {
        if (p[i] == 0) {
            CHECK(count[i] == 0, "%s: filtered token %d emitted %ld times", what, i, count[i]);
            continue;
        }
        double mean = N * p[i], sd = sqrt(N * p[i] * (1 - p[i]));
        CHECK(fabs((double)count[i] - mean) <= 5 * sd + 1e-9, "%s: token %d drawn %ld times, expected %.1f +- %.1f",
              what, i, count[i], mean, sd);
    }
}

static void test_sampling_statistics(void) {
    enum { V = 8, N = 200000 };
    const float logits[V] = {0.0f, 1.0f, -1.0f, 2.0f, 0.5f, -2.0f, 1.5f, 0.25f};
    scored_id scratch[V];
    check_frequencies("plain", logits, V, 1234, N);
    float s[V];
    memcpy(s, logits, sizeof s);
    warp_temperature(s, V, 0.7f);
    check_frequencies("temperature 0.7", s, V, 99, N);
    memcpy(s, logits, sizeof s);
    warp_top_k(s, V, 3, scratch);
    CHECK(count_finite(s, V) == 3, "top-k 3 leaves 3");
    check_frequencies("top-k 3", s, V, 7, N);
    memcpy(s, logits, sizeof s);
    warp_top_p(s, V, 0.8f, scratch);
    CHECK(count_finite(s, V) > 1 && count_finite(s, V) < V, "top-p 0.8 filters something");
    check_frequencies("top-p 0.8", s, V, 8, N);
    memcpy(s, logits, sizeof s);
    warp_top_k(s, V, 5, scratch);
    warp_top_p(s, V, 0.7f, scratch);
    check_frequencies("top-k 5 + top-p 0.7", s, V, 9, N);

    /* The extremes of u: never a filtered token. */
    float f[V] = {-INFINITY, 1, -INFINITY, 0.5f, -INFINITY, 2, -INFINITY, -INFINITY};
    double us[] = {0.0, 1e-300, 0.5, 0.9999999999999999, 1.0 - 1e-12};
    for (size_t i = 0; i < sizeof us / sizeof us[0]; i++) {
        int32_t t = sample_categorical(f, V, us[i]);
        CHECK(t == 1 || t == 3 || t == 5, "u=%.17g gave filtered token %d", us[i], t);
    }
    CHECK(sample_categorical(f, V, 0.0) == 1, "u=0 gives the first finite token");
    CHECK(sample_categorical(f, V, 0.9999999999999999) == 5, "u~1 gives the last finite token");
    /* A huge spread (probabilities underflow) still returns a finite token. */
    float g[4] = {-INFINITY, -1e30f, 0, -INFINITY};
    for (int i = 0; i < 100; i++) {
        int32_t t = sample_categorical(g, 4, sample_uniform(5, (uint64_t)i));
        CHECK(t == 1 || t == 2, "extreme spread gave %d", t);
    }
}

static void test_uniform_stream(void) {
    double sum = 0, mn = 1, mx = 0;
    const int N = 100000;
    for (int i = 0; i < N; i++) {
        double u = sample_uniform(42, (uint64_t)i);
        sum += u;
        if (u < mn) mn = u;
        if (u > mx) mx = u;
    }
    CHECK(mn >= 0 && mx < 1, "uniform in [0, 1): min %g max %g", mn, mx);
    CHECK(fabs(sum / N - 0.5) < 5 * sqrt(1.0 / 12 / N), "uniform mean %g", sum / N);
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        same &= sample_uniform(7, (uint64_t)i) == sample_uniform(7, (uint64_t)i);
        differ += sample_uniform(7, (uint64_t)i) != sample_uniform(8, (uint64_t)i);
    }
    CHECK(same, "same seed, same stream");
    CHECK(differ >= 999, "different seeds, different streams (%d of 1000 differ)", differ);
    /* Adjacent steps are not correlated in an obvious way. */
    double c = 0;
    for (int i = 0; i < N; i++) c += (sample_uniform(3, (uint64_t)i) - 0.5) * (sample_uniform(3, (uint64_t)i + 1) - 0.5);
    c /= N / 12.0;
    CHECK(fabs(c) < 0.02, "lag-1 correlation %g", c);
    /* The token streams of two seeds differ. */
    const float logits[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int tdiff = 0;
    for (int i = 0; i < 200; i++)
        tdiff += sample_categorical(logits, 8, sample_uniform(1, (uint64_t)i)) !=
                 sample_categorical(logits, 8, sample_uniform(2, (uint64_t)i));
    CHECK(tdiff > 100, "token streams of seeds 1 and 2 differ at %d of 200 steps", tdiff);
}

/* ---------------------------------------------------------------- */

static int gen(gptc_model *m, const gptc_generate_params *p, int32_t *out, size_t *n) {
    static const int32_t prompt[] = {464, 2068, 7586, 21831};
    int32_t *ids = NULL;
    size_t k = 0;
    gptc_status st = gptc_generate(m, NULL, prompt, 4, p, NULL, NULL, &ids, &k);
    if (st != GPTC_OK) {
        fprintf(stderr, "gptc_generate: %s\n", gptc_last_error());
        return 0;
    }
    memcpy(out, ids, k * sizeof *ids);
    *n = k;
    free(ids);
    return 1;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && memcmp(a, b, na * sizeof *a) == 0;
}

static void test_generate_api(void) {
    enum { NEW = 24 };
    gptc_model_params mp = gptc_model_default_params();
    mp.n_threads = 1;
    gptc_model *m = NULL, *m1 = NULL;
    if (gptc_model_from_shape("tiny", 11, &mp, &m) != GPTC_OK) {
        CHECK(0, "gptc_model_from_shape: %s", gptc_last_error());
        return;
    }
    gptc_generate_params p = gptc_generate_default_params(m);
    p.max_new_tokens = NEW;
    p.n_eos_token_ids = 0;
    p.do_sample = 1;
    p.top_k = 0;
    p.seed = 1234;
    int32_t a[NEW], b[NEW], c[NEW], g[NEW], k1[NEW];
    size_t na = 0, nb = 0, nc = 0, ng = 0, nk = 0;
    CHECK(gen(m, &p, a, &na) && na == NEW, "sampled generate (got %zu)", na);
    CHECK(gen(m, &p, b, &nb), "sampled generate again");
    CHECK(same_ids(a, na, b, nb), "same seed, same ids");
    p.seed = 1235;
    CHECK(gen(m, &p, c, &nc), "sampled generate, seed 1235");
    CHECK(!same_ids(a, na, c, nc), "different seeds, different ids");

    /* Thread count does not change a seeded stream. */
    mp.n_threads = 2;
    if (gptc_model_from_shape("tiny", 11, &mp, &m1) == GPTC_OK) {
        int32_t d[NEW];
        size_t nd = 0;
        p.seed = 1234;
        CHECK(gen(m1, &p, d, &nd), "sampled generate, 2 threads");
        CHECK(same_ids(a, na, d, nd), "2 threads and 1 thread give the same sampled ids");
    } else
        CHECK(0, "gptc_model_from_shape: %s", gptc_last_error());

    /* top_k = 1 sampling is greedy decoding; so is temperature 0. */
    p.do_sample = 0;
    CHECK(gen(m, &p, g, &ng) && ng == NEW, "greedy generate");
    p.do_sample = 1;
    p.top_k = 1;
    p.seed = 99;
    CHECK(gen(m, &p, k1, &nk), "top_k 1 generate");
    CHECK(same_ids(g, ng, k1, nk), "top_k 1 sampling equals greedy");
    p.top_k = 0;
    p.temperature = 0;
    CHECK(gen(m, &p, k1, &nk), "temperature 0 generate");
    CHECK(same_ids(g, ng, k1, nk), "temperature 0 equals greedy");
    /* top_p tiny keeps only the top token: greedy again. */
    p.temperature = 1;
    p.top_p = 1e-6f;
    CHECK(gen(m, &p, k1, &nk), "top_p tiny generate");
    CHECK(same_ids(g, ng, k1, nk), "top_p 1e-6 sampling equals greedy");

    /* Sampled tokens with top_k = 5 are among the 5 best of each step. */
    p.top_p = 1;
    p.top_k = 5;
    p.seed = 5;
    CHECK(gen(m, &p, a, &na) && na == NEW, "top_k 5 generate");
    {
        const gptc_config *cfg = gptc_model_config(m);
        static const int32_t prompt[] = {464, 2068, 7586, 21831};
        gptc_session *s = NULL;
        float *lg = malloc((size_t)cfg->n_vocab * sizeof *lg);
        int ok = lg && gptc_session_new(m, 4 + NEW, &s) == GPTC_OK &&
                 gptc_session_eval(s, prompt, 4, 1, lg) == GPTC_OK;
        for (size_t i = 0; ok && i < na; i++) {
            int higher = 0;
            for (int v = 0; v < cfg->n_vocab; v++) higher += lg[v] > lg[a[i]];
            CHECK(higher < 5, "step %zu: sampled token %d has %d better tokens with top_k 5", i, a[i], higher);
            ok = gptc_session_eval(s, &a[i], 1, 1, lg) == GPTC_OK;
        }
        CHECK(ok, "session replay: %s", gptc_last_error());
        gptc_session_free(s);
        free(lg);
    }

    /* Bad parameters are refused with a message naming them. */
    p = gptc_generate_default_params(m);
    p.max_new_tokens = 2;
    p.top_p = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    static const int32_t one[] = {1};
    CHECK(gptc_generate(m, NULL, one, 1, &p, NULL, NULL, &ids, &n) == GPTC_ERR_ARG &&
              strstr(gptc_last_error(), "top_p"),
          "top_p 0 refused: %s", gptc_last_error());
    p.top_p = 1;
    p.top_k = -1;
    CHECK(gptc_generate(m, NULL, one, 1, &p, NULL, NULL, &ids, &n) == GPTC_ERR_ARG &&
              strstr(gptc_last_error(), "top_k"),
          "top_k -1 refused: %s", gptc_last_error());
    p.top_k = 0;
    p.repetition_penalty = 0;
    CHECK(gptc_generate(m, NULL, one, 1, &p, NULL, NULL, &ids, &n) == GPTC_ERR_ARG &&
              strstr(gptc_last_error(), "repetition_penalty"),
          "repetition_penalty 0 refused: %s", gptc_last_error());
    p.repetition_penalty = 1;
    p.temperature = -1;
    CHECK(gptc_generate(m, NULL, one, 1, &p, NULL, NULL, &ids, &n) == GPTC_ERR_ARG &&
              strstr(gptc_last_error(), "temperature"),
          "temperature -1 refused: %s", gptc_last_error());
    p.temperature = 1;
    static const int32_t bad[] = {50257};
    CHECK(gptc_generate(m, NULL, bad, 1, &p, NULL, NULL, &ids, &n) == GPTC_ERR_RANGE,
          "prompt id past the vocabulary refused: %s", gptc_last_error());
    CHECK(ids == NULL && n == 0, "no output on failure");
    gptc_model_free(m);
    gptc_model_free(m1);
}

int main(void) {
    test_repetition_penalty();
    test_no_repeat_ngram();
    test_temperature_argmax();
    test_top_k();
    test_top_p();
    test_sampling_statistics();
    test_uniform_stream();
    test_generate_api();
    printf("%d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
