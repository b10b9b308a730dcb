/*
 * test_cuda.c - the CUDA backend against the CPU reference (needs a GPU).
 *
 * For each fixture model and two random-weight shapes, and for each device
 * dtype (f32, f16, bf16), runs the same token stream through a CPU session
 * and a CUDA session and compares:
 *   - prefill logits of every position of an odd-length prompt (cuBLASLt path),
 *   - logits of single-token eval() steps and of short multi-token passes at
 *     a nonzero position (GEMV path, and cuBLASLt at an offset),
 *   - eval_greedy() ids against the argmax of the CPU logits, mixed with
 *     eval() and a reset, so the device-side position and token are resynced;
 *   - greedy steps taken one ahead (the step launched on the token just
 *     picked, decode_step): the ids of eval_greedy against the host argmax
 *     of eval() on a second GPU session, bit for bit, through calls that
 *     take the step launched ahead, calls that do not (another token, a
 *     multi-token eval, a reset, a copy) and a session filled to its end.
 * Logit errors are measured against max|ref| of the rows compared; a greedy
 * id may differ only where the CPU's two candidates are within tolerance
 * (a near tie). Then, in fp32, gptc_generate with the logits processors and
 * sampling on the device against the CPU backend with the same seeds, the
 * device sampler against the host one on the same GPU model
 * (GPTC_HOST_SAMPLING), and the device sampler against itself (determinism);
 * sampler steps launched ahead, taken or not, against the host sampler.
 * Prints one line per case; exits 1 on any failure.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h" /* gptc_session_copy (beam search's) */
#include "gptc.h"
#include "sequence.h" /* the host sampler (gen_seq_pick) */

static int g_failed;
static int g_V; /* vocabulary of the case running, for per-row reports */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static int32_t rand_id(int32_t n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((g_rng >> 33) % (uint64_t)n);
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Max |got - ref| relative to max |ref|; prints and records a failure. */
static void compare(const char *what, const char *name, const char *dt, const float *ref,
                    const float *got, size_t n, float tol) {
    double mref = 0, merr = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs(ref[i]), e = fabs((double)got[i] - ref[i]);
        if (r > mref) mref = r;
        if (!(e <= merr)) merr = e; /* NaN counts as the largest error */
    }
    double rel = merr / (mref > 1e-6 ? mref : 1e-6);
    int ok = rel <= tol;
    printf("%-4s %-28s %-5s %-22s max|ref| %9.4g  max err %9.3g  rel %9.3g  (tol %g)\n",
           ok ? "ok" : "FAIL", name, dt, what, mref, merr, rel, (double)tol);
    if (getenv("GPTC_TEST_ROWS") && n > (size_t)g_V)
        for (size_t r = 0; r < n / g_V; r++) {
            double re = 0;
            for (size_t i = r * g_V; i < (r + 1) * g_V; i++) re = fmax(re, fabs((double)got[i] - ref[i]));
            printf("     row %zu: max err %.3g\n", r, re);
        }
    if (!ok) g_failed = 1;
}

typedef struct {
    gptc_session *cpu, *gpu;
    int V;
    float *ref, *got;
    const char *name, *dt;
    float tol;
} pair;

/* Evaluates ids on both and compares the last n_logits rows. */
static int eval_both(pair *p, const int32_t *ids, int n, int n_logits, const char *what) {
    if (gptc_session_eval(p->cpu, ids, (size_t)n, (size_t)n_logits, p->ref) != GPTC_OK ||
        gptc_session_eval(p->gpu, ids, (size_t)n, (size_t)n_logits, p->got) != GPTC_OK) {
        printf("FAIL %s %s %s: eval: %s\n", p->name, p->dt, what, gptc_last_error());
        g_failed = 1;
        return 0;
    }
    compare(what, p->name, p->dt, p->ref, p->got, (size_t)n_logits * p->V, p->tol);
    return 1;
}

/* `steps` greedy steps from `tok` (the CPU's pick is fed to both each step);
 * returns the last CPU pick, or -1 on failure. */
static int32_t greedy_both(pair *p, int32_t tok, int steps) {
    int mismatches = 0, ties = 0;
    for (int i = 0; i < steps; i++) {
        int32_t gnext = -1;
        if (gptc_session_eval_greedy(p->gpu, tok, &gnext) != GPTC_OK ||
            gptc_session_eval(p->cpu, &tok, 1, 1, p->ref) != GPTC_OK) {
            printf("FAIL %s %s greedy: %s\n", p->name, p->dt, gptc_last_error());
            g_failed = 1;
            return -1;
        }
        int32_t cnext = argmax(p->ref, p->V);
        if (gnext != cnext) {
            float mref = 0;
            for (int v = 0; v < p->V; v++) mref = fmaxf(mref, fabsf(p->ref[v]));
            int in_range = gnext >= 0 && gnext < p->V;
            if (in_range && p->ref[cnext] - p->ref[gnext] <= p->tol * mref) ties++;
            else mismatches++;
        }
        tok = cnext;
    }
    int ok = mismatches == 0;
    printf("%-4s %-28s %-5s greedy x%-13d mismatches %d, near ties %d\n", ok ? "ok" : "FAIL",
           p->name, p->dt, steps, mismatches, ties);
    if (!ok) g_failed = 1;
    return tok;
}

static void run_case(const char *name, gptc_model *cpu_model, gptc_model *gpu_model,
                     const char *dt, float tol) {
    const gptc_config *c = gptc_model_config(cpu_model);
    int max_len = c->n_ctx < 128 ? c->n_ctx : 128;
    int P = max_len >= 100 ? 37 : 13;
    pair p = {0};
    p.V = c->n_vocab;
    g_V = p.V;
    g_rng = 0x9e3779b97f4a7c15ull; /* each case draws the same way whatever ran before */
    p.name = name;
    p.dt = dt;
    p.tol = tol;
    p.ref = malloc((size_t)P * p.V * sizeof(float));
    p.got = malloc((size_t)P * p.V * sizeof(float));
    if (!p.ref || !p.got || gptc_session_new(cpu_model, max_len, &p.cpu) != GPTC_OK ||
        gptc_session_new(gpu_model, max_len, &p.gpu) != GPTC_OK) {
        printf("FAIL %s %s: session: %s\n", name, dt, gptc_last_error());
        g_failed = 1;
        goto done;
    }
    int32_t ids[64];
    for (int i = 0; i < P; i++) ids[i] = rand_id(p.V);
    /* Prefill, every row's logits. */
    if (!eval_both(&p, ids, P, P, "prefill")) goto done;
    int32_t tok = argmax(p.ref + (size_t)(P - 1) * p.V, p.V);
    /* Single-token eval steps. */
    char what[64];
    for (int i = 0; i < 4; i++) {
        snprintf(what, sizeof what, "eval step %d", i);
        if (!eval_both(&p, &tok, 1, 1, what)) goto done;
        tok = argmax(p.ref, p.V);
    }
    /* Greedy steps, then multi-token passes at an offset, then greedy again. */
    int steps = max_len - gptc_session_len(p.cpu) - 3 - 9 - 4;
    if (steps > 20) steps = 20;
    if ((tok = greedy_both(&p, tok, steps)) < 0) goto done;
    for (int i = 0; i < 3; i++) ids[i] = rand_id(p.V);
    if (!eval_both(&p, ids, 3, 2, "eval 3 at offset")) goto done;
    for (int i = 0; i < 9; i++) ids[i] = rand_id(p.V);
    if (!eval_both(&p, ids, 9, 9, "eval 9 at offset")) goto done;
    tok = argmax(p.ref + (size_t)8 * p.V, p.V);
    if ((tok = greedy_both(&p, tok, 3)) < 0) goto done;
    /* A reset: the device position must follow the session's. */
    gptc_session_reset(p.cpu);
    gptc_session_reset(p.gpu);
    for (int i = 0; i < 13; i++) ids[i] = rand_id(p.V);
    if (!eval_both(&p, ids, 13, 1, "prefill after reset")) goto done;
    greedy_both(&p, argmax(p.ref, p.V), 5);
done:
    gptc_session_free(p.cpu);
    gptc_session_free(p.gpu);
    free(p.ref);
    free(p.got);
}

/* One operation of spec_case on both sessions: eval_greedy on `a`, eval()
 * and the host argmax on `b` (the same kernels outside the graph: the same
 * logits, the same pick). Returns the pick, -1 on failure or a mismatch. */
static int32_t spec_step(gptc_session *a, gptc_session *b, int32_t tok, float *logits, int V,
                         const char *what) {
    int32_t ga = -1;
    if (gptc_session_eval_greedy(a, tok, &ga) != GPTC_OK || gptc_session_eval(b, &tok, 1, 1, logits) != GPTC_OK) {
        printf("FAIL spec %s: %s\n", what, gptc_last_error());
        g_failed = 1;
        return -1;
    }
    int32_t gb = argmax(logits, V);
    if (ga != gb) {
        printf("FAIL spec %s at %d: eval_greedy %d, eval + argmax %d\n", what, (int)gptc_session_len(b) - 1,
               (int)ga, (int)gb);
        g_failed = 1;
        return -1;
    }
    return ga;
}

static void spec_case(const char *name, gptc_model *gpu, const char *dt) {
    const int max_len = 48;
    int V = gptc_model_config(gpu)->n_vocab, n = 0, ok = 0; /* set once every step has passed */
    gptc_session *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t ids[8], tok;
    if (!logits || gptc_session_new(gpu, max_len, &a) != GPTC_OK || gptc_session_new(gpu, max_len, &b) != GPTC_OK ||
        gptc_session_new(gpu, max_len, &c) != GPTC_OK || gptc_session_new(gpu, max_len, &d) != GPTC_OK) {
        printf("FAIL spec %s %s: session: %s\n", name, dt, gptc_last_error());
        g_failed = 1;
        goto done;
    }
    g_rng = 0x51ed27ull;
    for (int i = 0; i < 5; i++) ids[i] = rand_id(V);
#define SPEC(x)                                                                                    \
    do {                                                                                           \
        if ((x) < 0) goto done;                                                                    \
        n++;                                                                                       \
    } while (0)
#define EVAL2(s1, s2, p, k)                                                                         \
    do {                                                                                           \
        if (gptc_session_eval(s1, p, k, 1, logits) != GPTC_OK || gptc_session_eval(s2, p, k, 1, logits) != GPTC_OK) { \
            printf("FAIL spec %s %s: eval: %s\n", name, dt, gptc_last_error());                  \
            g_failed = 1;                                                                          \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    EVAL2(a, b, ids, 5);
    tok = argmax(logits, V);
    /* its own picks: each call takes the step launched ahead */
    for (int i = 0; i < 8; i++) SPEC(tok = spec_step(a, b, tok, logits, V, "chain"));
    /* another token than the one picked: the step ahead is not it */
    SPEC(tok = spec_step(a, b, (tok + 1) % V, logits, V, "other token"));
    for (int i = 0; i < 3; i++) SPEC(tok = spec_step(a, b, tok, logits, V, "chain"));
    /* a multi-token eval while a step is ahead */
    ids[0] = tok, ids[1] = rand_id(V);
    EVAL2(a, b, ids, 2);
    tok = argmax(logits, V);
    for (int i = 0; i < 3; i++) SPEC(tok = spec_step(a, b, tok, logits, V, "after eval"));
    /* a copy of a (a step ahead in flight) continues as a does */
    if (gptc_session_copy(c, a) != GPTC_OK || gptc_session_copy(d, b) != GPTC_OK) {
        printf("FAIL spec %s %s: copy: %s\n", name, dt, gptc_last_error());
        g_failed = 1;
        goto done;
    }
    for (int i = 0; i < 3; i++) SPEC(tok = spec_step(c, d, tok, logits, V, "copy"));
    /* to the session's end: no step may be launched past it */
    while (gptc_session_len(a) < max_len) SPEC(tok = spec_step(a, b, tok, logits, V, "to the end"));
    /* a reset, then greedy from a one-token prompt at position 0 */
    gptc_session_reset(a);
    gptc_session_reset(b);
    for (int i = 0; i < 6; i++) SPEC(tok = spec_step(a, b, i == 0 ? ids[4] : tok, logits, V, "after reset"));
    ok = 1;
#undef SPEC
#undef EVAL2
done:
    if (ok) printf("ok   spec %-23s %-5s %d greedy steps = eval + argmax\n", name, dt, n);
    gptc_session_free(a);
    gptc_session_free(b);
    gptc_session_free(c);
    gptc_session_free(d);
    free(logits);
}

/* Generates for `n` prompts with params `gp` (seed = base + prompt index)
 * on two models, or twice on one (b == a) with the host sampler the second
 * time when `host_b`; returns how many sequences came out identical. */
static int same_sequences(gptc_model *a, gptc_model *b, int host_b, gptc_generate_params gp,
                          int n, int V) {
    int same = 0;
    uint64_t base = gp.seed;
    for (int i = 0; i < n; i++) {
        int32_t prompt[5];
        for (int k = 0; k < 5; k++) prompt[k] = rand_id(V);
        gp.seed = base + (uint64_t)i;
        int32_t *ia = NULL, *ib = NULL;
        size_t na = 0, nb = 0;
        gptc_status sa = gptc_generate(a, NULL, prompt, 5, &gp, NULL, NULL, &ia, &na);
        if (host_b) setenv("GPTC_HOST_SAMPLING", "1", 1);
        gptc_status sb = gptc_generate(b, NULL, prompt, 5, &gp, NULL, NULL, &ib, &nb);
        unsetenv("GPTC_HOST_SAMPLING");
        if (sa != GPTC_OK || sb != GPTC_OK) {
            printf("FAIL generate: %s\n", gptc_last_error());
            g_failed = 1;
        } else if (na == nb && (na == 0 || !memcmp(ia, ib, na * sizeof *ia))) {
            same++;
        }
        free(ia);
        free(ib);
    }
    return same;
}

/* The device sampler (fp32 weights, so the logits agree with the CPU's to
 * ~1e-6 and the draws agree but at rare boundaries). */
static void sample_case(const char *name, gptc_model *cpu, gptc_model *gpu) {
    const gptc_config *c = gptc_model_config(cpu);
    int V = c->n_vocab, n = 40;
    g_rng = 0x2545f4914f6cdd1dull;
    gptc_generate_params base = gptc_generate_default_params(cpu);
    base.max_new_tokens = 10;
    base.n_eos_token_ids = 1;
    base.eos_token_ids[0] = V / 3;
    static const struct {
        const char *what;
        int do_sample, top_k, ngram, min_new;
        float temperature, top_p, rep;
    } cases[] = {
        {"greedy+rep+ngram+min_new", 0, 0, 2, 4, 1.0f, 1.0f, 1.3f},
        {"sample top-k 20 top-p 0.9", 1, 20, 0, 0, 0.8f, 0.9f, 1.0f},
        {"sample top-p 0.5 rep 1.2", 1, 0, 0, 2, 1.3f, 0.5f, 1.2f},
        {"sample plain", 1, 0, 3, 0, 1.0f, 1.0f, 1.0f},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        gptc_generate_params gp = base;
        gp.do_sample = cases[k].do_sample;
        gp.top_k = cases[k].top_k;
        gp.no_repeat_ngram_size = cases[k].ngram;
        gp.min_new_tokens = cases[k].min_new;
        gp.temperature = cases[k].temperature;
        gp.top_p = cases[k].top_p;
        gp.repetition_penalty = cases[k].rep;
        gp.seed = 1000 * (k + 1);
        uint64_t rng = g_rng;
        int vs_cpu = same_sequences(gpu, cpu, 0, gp, n, V);
        g_rng = rng;
        int vs_host = same_sequences(gpu, gpu, 1, gp, n, V);
        g_rng = rng;
        int again = same_sequences(gpu, gpu, 0, gp, n, V);
        /* A draw whose u falls within rounding of a boundary of the
         * cumulative sum may differ, and changes the rest of its sequence:
         * allow a few such sequences, none between two device runs. */
        int ok = vs_cpu >= n * 9 / 10 && vs_host >= n * 9 / 10 && again == n;
        printf("%-4s %-28s f32   %-26s identical: vs cpu %d/%d, vs host sampler %d/%d, rerun %d/%d\n",
               ok ? "ok" : "FAIL", name, cases[k].what, vs_cpu, n, vs_host, n, again, n);
        if (!ok) g_failed = 1;
    }
}

/* Sampler steps launched ahead (decode_step): eval_sample's draws on the
 * device against the host sampler (gen_seq_pick) on a second session's
 * logits of the same model, through calls that take the steps launched
 * ahead and calls that do not - every fifth call feeds another token than
 * the one drawn, after which the sampler's count of draws (its random
 * numbers), history and mask must be as if nothing had run ahead. Both
 * sides are fed the same tokens, so a draw at a rounding boundary of the
 * cumulative sum stays one draw; a wrong state after a detour would change
 * most draws (temperature 1 over the whole vocabulary). */
static void sample_spec_case(const char *name, gptc_model *gpu) {
    int V = gptc_model_config(gpu)->n_vocab, total = 0, same = 0, after = 0, same_after = 0;
    enum { PROMPTS = 4, STEPS = 25, P = 5 };
    gptc_generate_params gp = gptc_generate_default_params(gpu);
    gp.do_sample = 1, gp.temperature = 1.0f, gp.top_k = 0, gp.top_p = 1.0f;
    gp.repetition_penalty = 1.3f, gp.no_repeat_ngram_size = 2, gp.min_new_tokens = 0;
    gp.n_eos_token_ids = 0, gp.max_new_tokens = STEPS;
    float *logits = malloc((size_t)V * sizeof *logits);
    int ok = logits != NULL;
    for (int i = 0; ok && i < PROMPTS; i++) {
        int32_t prompt[P], next = 0;
        for (int k = 0; k < P; k++) prompt[k] = rand_id(V);
        gp.seed = 77 + (uint64_t)i;
        gptc_session *a = NULL, *b = NULL;
        gen_seq g;
        int have_g = gen_seq_init(&g, gpu, NULL, &gp, prompt, P, STEPS, 0) == GPTC_OK;
        ok = have_g && gptc_session_new(gpu, P + STEPS, &a) == GPTC_OK &&
             gptc_session_new(gpu, P + STEPS, &b) == GPTC_OK && gptc_session_sample_init(a, &gp, NULL, 0) == GPTC_OK &&
             gptc_session_eval_sample(a, prompt, P, &next) == GPTC_OK &&
             gptc_session_eval(b, prompt, P, 1, logits) == GPTC_OK;
        int detoured = 0;
        for (int k = 0; ok && k < STEPS; k++) {
            int32_t want = gen_seq_pick(&g, logits);
            total++, same += want == next;
            if (detoured) after++, same_after += want == next;
            int32_t feed = k % 5 == 3 ? (next + 1 + rand_id(V - 1)) % V : next;
            detoured |= feed != next;
            (void)gen_seq_push(&g, feed);
            if (k + 1 < STEPS)
                ok = gptc_session_eval_sample(a, &feed, 1, &next) == GPTC_OK &&
                     gptc_session_eval(b, &feed, 1, 1, logits) == GPTC_OK;
        }
        if (!ok) printf("FAIL %-28s sampler steps ahead: %s\n", name, gptc_last_error());
        if (have_g) gen_seq_free(&g);
        gptc_session_free(a);
        gptc_session_free(b);
    }
    free(logits);
    /* the host sampler's boundary cases (sample_case) allow a few */
    int pass = ok && after > 0 && same >= total * 19 / 20 && same_after >= after * 19 / 20;
    printf("%-4s %-28s f32   sampler steps ahead, detours  same draw as the host sampler: %d/%d, after a detour %d/%d\n",
           pass ? "ok" : "FAIL", name, same, total, same_after, after);
    if (!pass) g_failed = 1;
}

/* The prompt is part of the no-repeat-ngram history (transformers bans
 * n-grams of the whole input_ids). With size 1 every prompt token is banned:
 * the prompts are the model's own greedy continuations, which loop, so the
 * unconstrained argmax after them is often a prompt token ("exercised"),
 * and the device sampler must then pick as the host's does. */
static void ngram_prompt_case(const char *name, gptc_model *gpu) {
    int V = gptc_model_config(gpu)->n_vocab, n = 12, exercised = 0, ok = 0;
    enum { P = 12, NEW = 6 };
    gptc_generate_params plain = gptc_generate_default_params(gpu), ban = plain;
    plain.do_sample = 0, plain.repetition_penalty = 1.0f, plain.no_repeat_ngram_size = 0, plain.min_new_tokens = 0;
    plain.n_eos_token_ids = 0;
    ban = plain;
    ban.no_repeat_ngram_size = 1, ban.max_new_tokens = NEW;
    for (int i = 0; i < n; i++) {
        int32_t prompt[P], *cont = NULL, *a = NULL, *b = NULL, *next = NULL;
        size_t nc = 0, na = 0, nb = 0, nn = 0;
        prompt[0] = rand_id(V);
        plain.max_new_tokens = P - 1;
        gptc_status st = gptc_generate(gpu, NULL, prompt, 1, &plain, NULL, NULL, &cont, &nc);
        if (st == GPTC_OK && nc == P - 1) {
            memcpy(prompt + 1, cont, (P - 1) * sizeof *prompt);
            plain.max_new_tokens = 1;
            st = gptc_generate(gpu, NULL, prompt, P, &plain, NULL, NULL, &next, &nn);
        }
        if (st == GPTC_OK) st = gptc_generate(gpu, NULL, prompt, P, &ban, NULL, NULL, &a, &na);
        setenv("GPTC_HOST_SAMPLING", "1", 1);
        if (st == GPTC_OK) st = gptc_generate(gpu, NULL, prompt, P, &ban, NULL, NULL, &b, &nb);
        unsetenv("GPTC_HOST_SAMPLING");
        if (st != GPTC_OK || nc != P - 1 || nn != 1) {
            printf("FAIL %s: ngram prompt case: %s\n", name, st != GPTC_OK ? gptc_last_error() : "short output");
            g_failed = 1;
        } else {
            int hit = 0;
            for (int k = 0; k < P; k++) hit |= prompt[k] == next[0];
            exercised += hit;
            int good = na == NEW && nb == NEW && !memcmp(a, b, na * sizeof *a);
            for (size_t j = 0; j < na; j++)
                for (int k = 0; k < P; k++) good &= a[j] != prompt[k];
            ok += good;
        }
        free(cont), free(a), free(b), free(next);
    }
    int pass = ok == n && exercised > 0;
    printf("%-4s %-28s f32   %-26s device = host and no prompt token: %d/%d (ban needed in %d)\n",
           pass ? "ok" : "FAIL", name, "greedy, prompt ngram 1", ok, n, exercised);
    if (!pass) g_failed = 1;
}

int main(void) {
    const char *root = getenv("GPTC_ROOT");
    if (!root) root = ".";
    static const char *fixtures[] = {"base-gelu_new",   "orig-f32-gelu",
                                     "untied-relu",     "invlayer-reorder-quick_gelu",
                                     "act-mish",        "gpt2vocab-f16",
                                     "act-gelu_10",     "noscale-bf16-swish"};
    static const char *shapes[] = {"tiny", "gpt2"};
    static const struct {
        gptc_dtype dt;
        const char *name;
        float tol;
    } dts[] = {{GPTC_DTYPE_F32, "f32", 1e-4f}, {GPTC_DTYPE_F16, "f16", 2e-2f},
               {GPTC_DTYPE_BF16, "bf16", 5e-2f}};
    size_t nf = sizeof fixtures / sizeof *fixtures, ns = sizeof shapes / sizeof *shapes;
    for (size_t k = 0; k < nf + ns; k++) {
        char dir[4096];
        const char *name = k < nf ? fixtures[k] : shapes[k - nf];
        if (k < nf) snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", root, name);
        gptc_model_params mp = gptc_model_default_params();
        mp.backend = "cpu";
        gptc_model *cpu = NULL;
        gptc_status st = k < nf ? gptc_model_load(dir, &mp, &cpu)
                                : gptc_model_from_shape(name, 7, &mp, &cpu);
        if (st != GPTC_OK) {
            printf("FAIL %s: cpu load: %s\n", name, gptc_last_error());
            g_failed = 1;
            continue;
        }
        for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
            mp.backend = "cuda";
            mp.dtype = dts[d].dt;
            gptc_model *gpu = NULL;
            st = k < nf ? gptc_model_load(dir, &mp, &gpu) : gptc_model_from_shape(name, 7, &mp, &gpu);
            if (st != GPTC_OK) {
                printf("FAIL %s %s: cuda load: %s\n", name, dts[d].name, gptc_last_error());
                g_failed = 1;
                continue;
            }
            /* Without the 1/sqrt(D) scale, attention scores are sqrt(D)
             * times larger and so are their rounding errors: with bf16's 8-bit
             * mantissa one softmax row can swing (0.26 of max|ref| seen on
             * noscale-bf16-swish, f32 and f16 well within theirs). */
            float tol = dts[d].tol;
            if (dts[d].dt == GPTC_DTYPE_BF16 && !gptc_model_config(cpu)->scale_attn_weights) tol *= 8;
            run_case(name, cpu, gpu, dts[d].name, tol);
            if (dts[d].dt != GPTC_DTYPE_BF16 && (k == 0 || k == nf - 3 || k == nf + 1))
                spec_case(name, gpu, dts[d].name);
            if (dts[d].dt == GPTC_DTYPE_F32) sample_case(name, cpu, gpu), sample_spec_case(name, gpu), ngram_prompt_case(name, gpu);
            gptc_model_free(gpu);
        }
        gptc_model_free(cpu);
    }
    printf(g_failed ? "test_cuda: FAILED\n" : "test_cuda: all passed\n");
    return g_failed;
}
