/*
 * test_batch.c - batched generation (gptc_batch_*, gptc_generate_batch)
 * against one prompt at a time (gptc_generate), which the fixtures tie to
 * transformers.
 *
 * Every result of a batch must be the token ids gptc_generate gives for the
 * same prompt and parameters alone: greedy and sampled (per-request seeds,
 * temperatures, top-k/top-p, penalties, stop strings), with prompts of
 * different lengths, requests joining a running batch, a cache too small for
 * all of them at once (they wait), cancellation, and early finishers. Plus
 * the cache bookkeeping (blocks back in the pool) and the errors.
 *
 *     GPTC_ROOT=. build/tests/test_batch
 * GPTC_BATCH_BACKEND=cuda runs it on the CUDA backend.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "check.h"
#include "gptc.h"
#include "internal.h"
#include "sampling.h"

static const char *g_backend = "cpu";
/* fp32 unless GPTC_BATCH_DTYPE says f16 / bf16: on CUDA those take the
 * tensor-core products, whose batch invariance the bitwise checks then test. */
static gptc_dtype g_dtype = GPTC_DTYPE_F32;

static char *fixture(const char *name) {
    const char *root = getenv("GPTC_ROOT");
    char *dir = gptc_path_join(root ? root : ".", "tests/fixtures");
    char *p = dir ? gptc_path_join(dir, name) : NULL;
    free(dir);
    return p;
}

/* A fixture, or with "shape:NAME" a model of that shape with random weights
 * (GPTC_BATCH_SHAPE: gpt2's 64-wide heads take the tensor-core attention and
 * its fresh QKV path, which the fixtures' 8-wide heads never do). */
static gptc_model *load(const char *name) {
    gptc_model_params mp = gptc_model_default_params();
    mp.n_threads = 2;
    mp.backend = g_backend;
    mp.dtype = g_dtype;
    gptc_model *m = NULL;
    if (!strncmp(name, "shape:", 6)) {
        if (gptc_model_from_shape(name + 6, 7, &mp, &m) != GPTC_OK) CHECK(0, "%s: %s", name, gptc_last_error());
        return m;
    }
    char *dir = fixture(name);
    if (!dir || gptc_model_load(dir, &mp, &m) != GPTC_OK) CHECK(0, "load %s: %s", name, gptc_last_error());
    free(dir);
    return m;
}

static uint64_t g_rng = 12345;
static uint32_t rnd(uint32_t n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

static int same(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s (%zu):", what, n);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

#define NP 12

typedef struct {
    int32_t *prompt[NP];
    size_t len[NP];
    gptc_generate_params p[NP];
} workload;

static void make_prompts(workload *w, const gptc_model *m, int max_len) {
    int V = gptc_model_config(m)->n_vocab;
    for (int i = 0; i < NP; i++) {
        w->len[i] = 1 + rnd((uint32_t)max_len);
        w->prompt[i] = malloc(w->len[i] * sizeof(int32_t));
        for (size_t k = 0; k < w->len[i]; k++) w->prompt[i][k] = (int32_t)rnd((uint32_t)V);
    }
}

static void free_prompts(workload *w) {
    for (int i = 0; i < NP; i++) free(w->prompt[i]);
}

/* One request's parameters, from the model's defaults: greedy, or sampling
 * with a mix of processors, each with its own seed and length. */
static gptc_generate_params params_for(const gptc_model *m, int i, int sampled) {
    gptc_generate_params p = gptc_generate_default_params(m);
    p.max_new_tokens = 1 + (int32_t)rnd(24);
    p.do_sample = sampled;
    if (sampled) {
        p.seed = 1000 + (uint64_t)i;
        p.temperature = 0.5f + 0.25f * (float)(i % 4);
        p.top_k = i % 3 == 0 ? 0 : 5 + i;
        p.top_p = i % 2 ? 0.9f : 1.0f;
    }
    if (i % 4 == 1) p.repetition_penalty = 1.3f;
    if (i % 5 == 2) p.no_repeat_ngram_size = 2;
    if (i % 6 == 3) p.min_new_tokens = 2;
    /* OpenAI's penalties: picked on the host on every backend */
    if (i % 7 == 4) p.presence_penalty = 0.5f, p.frequency_penalty = 0.3f;
    return p;
}

/* The reference: each prompt alone. */
static void run_single(gptc_model *m, const gptc_tokenizer *tok, workload *w, int32_t **ids, size_t *lens) {
    for (int i = 0; i < NP; i++) {
        ids[i] = NULL;
        gptc_status st = gptc_generate(m, tok, w->prompt[i], w->len[i], &w->p[i], NULL, NULL, &ids[i], &lens[i]);
        CHECK(st == GPTC_OK, "gptc_generate %d: %s", i, gptc_last_error());
    }
}

/* Adds the requests over time (`first` at once, then one every `every`
 * steps while the batch runs) and checks every event against the cache's
 * bookkeeping. */
static void run_batch_at(gptc_model *m, const gptc_tokenizer *tok, workload *w, const gptc_batch_params *bp,
                         int32_t **ids, size_t *lens, const char *what, int first, int every) {
    gptc_batch *b = NULL;
    if (gptc_batch_new(m, tok, bp, &b) != GPTC_OK) {
        CHECK(0, "%s: gptc_batch_new: %s", what, gptc_last_error());
        return;
    }
    uint64_t rid[NP];
    int done[NP] = {0}, added = 0, finished = 0, steps = 0;
    size_t cap[NP];
    for (int i = 0; i < NP; i++) ids[i] = NULL, lens[i] = 0, cap[i] = 0;
    while (finished < NP && steps < 10000) {
        while (added < NP && (added < first || (steps > 0 && steps % every == 0))) {
            gptc_status st = gptc_batch_add(b, w->prompt[added], w->len[added], &w->p[added], &rid[added]);
            CHECK(st == GPTC_OK && rid[added] > 0, "%s: add %d: %s", what, added, gptc_last_error());
            added++;
            if (steps > 0) break;
        }
        const gptc_batch_event *ev;
        size_t n;
        gptc_status st = gptc_batch_step(b, &ev, &n);
        steps++;
        if (st != GPTC_OK) {
            CHECK(0, "%s: step: %s", what, gptc_last_error());
            break;
        }
        gptc_batch_stats s = gptc_batch_get_stats(b);
        CHECK(s.running <= (size_t)(bp->max_batch ? bp->max_batch : 32), "%s: %zu running", what, s.running);
        CHECK(s.kv_positions_used <= s.kv_positions_reserved && s.kv_positions_reserved <= s.kv_positions_total,
              "%s: cache used %zu, reserved %zu, total %zu", what, s.kv_positions_used, s.kv_positions_reserved,
              s.kv_positions_total);
        for (size_t e = 0; e < n; e++) {
            int i = -1;
            for (int k = 0; k < added; k++)
                if (rid[k] == ev[e].id) i = k;
            if (i < 0 || done[i]) {
                CHECK(0, "%s: event for unknown or finished request %llu", what, (unsigned long long)ev[e].id);
                continue;
            }
            if (ev[e].token >= 0) {
                if (lens[i] == cap[i]) {
                    cap[i] = cap[i] ? 2 * cap[i] : 8;
                    ids[i] = realloc(ids[i], cap[i] * sizeof(int32_t));
                }
                ids[i][lens[i]++] = ev[e].token;
            }
            if (ev[e].finish != GPTC_FINISH_NONE) done[i] = 1, finished++;
        }
    }
    CHECK(finished == NP, "%s: %d of %d finished after %d steps", what, finished, NP, steps);
    gptc_batch_stats s = gptc_batch_get_stats(b);
    CHECK(s.running == 0 && s.waiting == 0 && s.kv_positions_used == 0 && s.kv_positions_reserved == 0,
          "%s: all done, but %zu running, %zu waiting, %zu positions held", what, s.running, s.waiting,
          s.kv_positions_used);
    gptc_batch_free(b);
}

/* Three at the start, then one more every other step. */
static void run_batch(gptc_model *m, const gptc_tokenizer *tok, workload *w, const gptc_batch_params *bp,
                      int32_t **ids, size_t *lens, const char *what) {
    run_batch_at(m, tok, w, bp, ids, lens, what, 3, 2);
}

static void compare(workload *w, int32_t **want, size_t *wlen, int32_t **got, size_t *glen, const char *what,
                    const char *model) {
    int ok = 0;
    for (int i = 0; i < NP; i++) {
        int eq = same(want[i], wlen[i], got[i], glen[i]);
        ok += eq;
        if (!eq) {
            fprintf(stderr, "  %s %s, prompt %d (%zu tokens):\n", model, what, i, w->len[i]);
            print_ids("alone", want[i], wlen[i]);
            print_ids("batch", got[i], glen[i]);
        }
    }
    CHECK(ok == NP, "%s, %s: %d of %d sequences identical to one prompt at a time", model, what, ok, NP);
}

static void free_ids(int32_t **ids) {
    for (int i = 0; i < NP; i++) free(ids[i]), ids[i] = NULL;
}

/* Greedy and sampled workloads on one model, under several batch shapes. */
static void test_model(const char *name) {
    gptc_model *m = load(name);
    if (!m) return;
    gptc_tokenizer *tok = NULL;
    if (strncmp(name, "shape:", 6)) {
        char *dir = fixture(name);
        gptc_tokenizer_load(dir, &tok); /* not every fixture has one; only stop strings need it */
        free(dir);
    }
    int n_ctx = gptc_model_config(m)->n_ctx;
    for (int sampled = 0; sampled < 2; sampled++) {
        workload w;
        /* a shape's prompts up to 150 tokens: several query tiles of the tensor-core attention */
        int longest = strncmp(name, "shape:", 6) ? 40 : 150;
        make_prompts(&w, m, n_ctx / 2 < longest ? n_ctx / 2 : longest);
        for (int i = 0; i < NP; i++) w.p[i] = params_for(m, i, sampled);
        int32_t *want[NP], *got[NP];
        size_t wlen[NP], glen[NP];
        run_single(m, tok, &w, want, wlen);
        struct {
            const char *what;
            gptc_batch_params bp;
        } shapes[] = {
            {"default batch", {.max_batch = 0}},
            {"batch of 3", {.max_batch = 3}},
            {"one prompt per step", {.max_batch = 32, .max_prefill_tokens = 1}},
            /* Room for about two requests: the others wait for blocks. */
            {"a cache for two", {.max_batch = 32}},
        };
        /* the cache is fp32 here on either backend (dtype f32) */
        const gptc_config *c = gptc_model_config(m);
        /* K/V in the weights' dtype on CUDA, fp32 on the CPU */
    uint64_t kv_es = g_dtype == GPTC_DTYPE_F32 || strcmp(g_backend, "cpu") == 0 ? 4 : 2;
    uint64_t per_pos = 2ull * (uint64_t)c->n_layer * (uint64_t)c->n_embd * kv_es;
        /* blocks of 16 positions for about two of the longest requests (8 for prompts up to 40) */
        shapes[3].bp.kv_memory = per_pos * 16 * (uint64_t)(2 * ((longest + 24 + 15) / 16));
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            char what[128];
            snprintf(what, sizeof what, "%s, %s", sampled ? "sampled" : "greedy", shapes[k].what);
            run_batch(m, tok, &w, &shapes[k].bp, got, glen, what);
            compare(&w, want, wlen, got, glen, what, name);
            free_ids(got);
        }
        /* gptc_generate_batch: the same, with one parameter set for all. */
        for (int i = 0; i < NP; i++) w.p[i] = w.p[sampled ? 5 : 0];
        free_ids(want);
        run_single(m, tok, &w, want, wlen);
        const int32_t *prompts[NP];
        for (int i = 0; i < NP; i++) prompts[i] = w.prompt[i];
        gptc_batch_params bp = {.max_batch = 4};
        gptc_status st = gptc_generate_batch(m, tok, NP, prompts, w.len, &w.p[0], &bp, NULL, NULL, got, glen);
        CHECK(st == GPTC_OK, "gptc_generate_batch: %s", gptc_last_error());
        if (st == GPTC_OK) compare(&w, want, wlen, got, glen, sampled ? "generate_batch sampled" : "generate_batch greedy", name);
        free_ids(got);
        free_ids(want);
        free_prompts(&w);
    }
    gptc_tokenizer_free(tok);
    gptc_model_free(m);
}

/* Greedy requests of prompts that cross cache blocks at different steps,
 * leaving the batch one by one: on CUDA the passes launched ahead of the
 * host (gptc_pass.continues) are taken whole, taken in part when requests
 * have left, and dropped when one joins (GPTC_BATCH_SPEC_STATS=1 counts
 * them). */
static void test_ahead(const char *name) {
    gptc_model *m = load(name);
    if (!m) return;
    int n_ctx = gptc_model_config(m)->n_ctx;
    /* short prompts: it is the decode passes that are launched ahead (whose
     * positions still cross blocks of 16 at different steps) */
    int longest = n_ctx / 2 < 24 ? n_ctx / 2 : 24;
    workload w;
    make_prompts(&w, m, longest);
    for (int i = 0; i < NP; i++) {
        w.p[i] = gptc_generate_default_params(m);
        w.p[i].max_new_tokens = 3 + 2 * i; /* one leaves every other step */
        if (w.p[i].max_new_tokens > n_ctx - (int)w.len[i]) w.p[i].max_new_tokens = n_ctx - (int)w.len[i];
    }
    int32_t *want[NP], *got[NP];
    size_t wlen[NP], glen[NP];
    run_single(m, NULL, &w, want, wlen);
    gptc_batch_params bp = {.max_batch = 32};
    run_batch_at(m, NULL, &w, &bp, got, glen, "all at once", NP, 1);
    compare(&w, want, wlen, got, glen, "greedy, all at once, leaving one by one", name);
    free_ids(got);
    run_batch_at(m, NULL, &w, &bp, got, glen, "two joining late", NP - 2, 7);
    compare(&w, want, wlen, got, glen, "greedy, two joining at steps 7 and 14", name);
    free_ids(got);
    free_ids(want);
    free_prompts(&w);
    gptc_model_free(m);
}

/* Stop strings and eos end requests early; the others go on. */
static void test_stops(void) {
    gptc_model *m = load("gpt2vocab-f16");
    char *dir = fixture("gpt2vocab-f16");
    gptc_tokenizer *tok = NULL;
    CHECK(dir && gptc_tokenizer_load(dir, &tok) == GPTC_OK, "tokenizer: %s", gptc_last_error());
    free(dir);
    if (!m || !tok) {
        gptc_model_free(m);
        gptc_tokenizer_free(tok);
        return;
    }
    workload w;
    make_prompts(&w, m, 20);
    static const char *stops[] = {"e", " the", "\n"};
    for (int i = 0; i < NP; i++) {
        w.p[i] = params_for(m, i, i % 2);
        w.p[i].max_new_tokens = 30;
        if (i % 3 == 0) w.p[i].stop_strings = stops, w.p[i].n_stop_strings = 3;
        /* a frequent token as eos for some: they end early */
        if (i % 3 == 1) w.p[i].eos_token_ids[0] = w.prompt[i][0], w.p[i].n_eos_token_ids = 1;
    }
    int32_t *want[NP], *got[NP];
    size_t wlen[NP], glen[NP];
    run_single(m, tok, &w, want, wlen);
    gptc_batch_params bp = {.max_batch = 5};
    run_batch(m, tok, &w, &bp, got, glen, "stop strings and eos");
    compare(&w, want, wlen, got, glen, "stop strings and eos", "gpt2vocab-f16");
    int short_ones = 0;
    for (int i = 0; i < NP; i++) short_ones += wlen[i] < 30;
    CHECK(short_ones > 0, "some requests ended before max_new_tokens (%d)", short_ones);
    free_ids(want);
    free_ids(got);
    free_prompts(&w);
    gptc_tokenizer_free(tok);
    gptc_model_free(m);
}

static void test_api(void) {
    gptc_model *m = load("base-gelu_new");
    if (!m) return;
    const gptc_config *c = gptc_model_config(m);
    gptc_batch *b = NULL;
    gptc_batch_params bp = gptc_batch_default_params();
    gptc_generate_params p = gptc_generate_default_params(m);
    p.max_new_tokens = 6;
    int32_t prompt[5] = {1, 2, 3, 4, 5};
    uint64_t id = 99;

    bp.max_batch = -1;
    CHECK(gptc_batch_new(m, NULL, &bp, &b) == GPTC_ERR_ARG && strstr(gptc_last_error(), "max_batch"),
          "max_batch -1 refused: %s", gptc_last_error());
    bp = gptc_batch_default_params();
    bp.kv_memory = 100;
    CHECK(gptc_batch_new(m, NULL, &bp, &b) == GPTC_ERR_RANGE && strstr(gptc_last_error(), "kv_memory"),
          "kv_memory below one block refused: %s", gptc_last_error());
    /* K/V in the weights' dtype on CUDA, fp32 on the CPU */
    uint64_t kv_es = g_dtype == GPTC_DTYPE_F32 || strcmp(g_backend, "cpu") == 0 ? 4 : 2;
    uint64_t per_pos = 2ull * (uint64_t)c->n_layer * (uint64_t)c->n_embd * kv_es;
    bp.kv_memory = per_pos * 16 * 2; /* 32 positions */
    CHECK(gptc_batch_new(m, NULL, &bp, &b) == GPTC_OK, "batch: %s", gptc_last_error());
    if (!b) {
        gptc_model_free(m);
        return;
    }
    gptc_batch_stats s = gptc_batch_get_stats(b);
    CHECK(s.kv_positions_total == 32, "kv_memory of 32 positions gives %zu", s.kv_positions_total);
    p.max_new_tokens = 28; /* 5 + 28 > 32: can never fit */
    CHECK(gptc_batch_add(b, prompt, 5, &p, &id) == GPTC_ERR_RANGE && id == 0 &&
              strstr(gptc_last_error(), "kv_memory") && strstr(gptc_last_error(), "needs 48"),
          "a request larger than the cache refused: %s", gptc_last_error());
    p.max_new_tokens = 6;
    p.top_p = 2;
    CHECK(gptc_batch_add(b, prompt, 5, &p, &id) == GPTC_ERR_ARG && strstr(gptc_last_error(), "top_p"),
          "bad top_p refused: %s", gptc_last_error());
    p.top_p = 1;
    p.num_beams = 2;
    CHECK(gptc_batch_add(b, prompt, 5, &p, &id) == GPTC_ERR_UNSUPPORTED && strstr(gptc_last_error(), "num_beams"),
          "beams refused: %s", gptc_last_error());
    p.num_beams = 1;
    int32_t bad[2] = {1, c->n_vocab};
    CHECK(gptc_batch_add(b, bad, 2, &p, &id) == GPTC_ERR_RANGE, "out-of-range prompt id refused: %s",
          gptc_last_error());
    CHECK(gptc_batch_add(b, prompt, 0, &p, &id) == GPTC_ERR_ARG, "empty prompt refused: %s", gptc_last_error());

    /* Three requests of 16 positions each in a cache of 32: the third waits. */
    uint64_t a1, a2, a3, z;
    p.max_new_tokens = 11;
    CHECK(gptc_batch_add(b, prompt, 5, &p, &a1) == GPTC_OK, "add: %s", gptc_last_error());
    CHECK(gptc_batch_add(b, prompt, 5, &p, &a2) == GPTC_OK, "add: %s", gptc_last_error());
    CHECK(gptc_batch_add(b, prompt, 4, &p, &a3) == GPTC_OK, "add: %s", gptc_last_error());
    gptc_generate_params p0 = p;
    p0.max_new_tokens = 0;
    CHECK(gptc_batch_add(b, prompt, 3, &p0, &z) == GPTC_OK, "add with max_new_tokens 0: %s", gptc_last_error());
    CHECK(a1 && a2 && a3 && z && a1 != a2 && a2 != a3, "distinct ids");
    const gptc_batch_event *ev;
    size_t n;
    CHECK(gptc_batch_step(b, &ev, &n) == GPTC_OK, "step: %s", gptc_last_error());
    s = gptc_batch_get_stats(b);
    CHECK(s.running == 2 && s.waiting == 1, "two run, one waits for room: %zu running, %zu waiting", s.running,
          s.waiting);
    int got_z = 0, got_a3 = 0;
    for (size_t e = 0; e < n; e++) {
        if (ev[e].id == z) got_z = ev[e].token == -1 && ev[e].finish == GPTC_FINISH_LENGTH;
        got_a3 |= ev[e].id == a3;
    }
    CHECK(got_z && n == 3 && !got_a3, "first step: the empty request finished, two tokens (%zu events)", n);
    if (strcmp(g_backend, "cpu") == 0)
        CHECK(s.kv_positions_used == 16 * 2, "each running request holds one block: %zu positions",
              s.kv_positions_used);
    /* Cancelling a running request frees its room: the waiting one starts. */
    CHECK(gptc_batch_cancel(b, a1) == GPTC_OK, "cancel: %s", gptc_last_error());
    CHECK(gptc_batch_cancel(b, a1) == GPTC_ERR_ARG, "cancel twice refused");
    CHECK(gptc_batch_cancel(b, 12345) == GPTC_ERR_ARG, "cancel of an unknown id refused");
    CHECK(gptc_batch_step(b, &ev, &n) == GPTC_OK, "step: %s", gptc_last_error());
    s = gptc_batch_get_stats(b);
    CHECK(s.running == 2 && s.waiting == 0, "after the cancel: %zu running, %zu waiting", s.running, s.waiting);
    for (size_t e = 0; e < n; e++) CHECK(ev[e].id != a1, "no event for a cancelled request");
    /* A waiting request can be cancelled too. */
    uint64_t a4;
    CHECK(gptc_batch_add(b, prompt, 5, &p, &a4) == GPTC_OK, "add: %s", gptc_last_error());
    CHECK(gptc_batch_cancel(b, a4) == GPTC_OK && gptc_batch_get_stats(b).waiting == 0, "cancel a waiting one");
    int steps = 0;
    while (gptc_batch_get_stats(b).running && steps++ < 100) gptc_batch_step(b, &ev, &n);
    s = gptc_batch_get_stats(b);
    CHECK(s.running == 0 && s.kv_positions_used == 0, "all ended, no block held (%zu)", s.kv_positions_used);
    CHECK(gptc_batch_step(b, &ev, &n) == GPTC_OK && n == 0, "a step with nothing to do");
    CHECK(gptc_batch_step(b, NULL, &n) == GPTC_ERR_ARG, "NULL events refused");
    gptc_batch_free(b);
    gptc_batch_free(NULL);

    /* gptc_generate_batch: the error names the prompt; a stop from the callback. */
    const int32_t *prompts[2] = {prompt, bad};
    size_t lens[2] = {5, 2}, out_lens[2];
    int32_t *out[2];
    CHECK(gptc_generate_batch(m, NULL, 2, prompts, lens, &p, NULL, NULL, NULL, out, out_lens) == GPTC_ERR_RANGE &&
              strstr(gptc_last_error(), "prompt 2") && !out[0] && !out[1],
          "the bad prompt is named: %s", gptc_last_error());
    gptc_model_free(m);
}

static int stop_after_3(size_t index, int32_t id, void *user) {
    (void)id;
    size_t *count = user;
    return ++count[index] == 3;
}

static void test_callback(void) {
    gptc_model *m = load("base-gelu_new");
    if (!m) return;
    gptc_generate_params p = gptc_generate_default_params(m);
    p.max_new_tokens = 10;
    p.n_eos_token_ids = 0;
    int32_t a[3] = {1, 2, 3}, b2[7] = {4, 5, 6, 7, 8, 9, 10};
    const int32_t *prompts[2] = {a, b2};
    size_t lens[2] = {3, 7}, out_lens[2], count[2] = {0, 0};
    int32_t *out[2];
    /* stop_strings set but n_stop_strings 0: the array is not the batch's to free */
    const char *unused[1] = {"x"};
    p.stop_strings = unused;
    CHECK(gptc_generate_batch(m, NULL, 2, prompts, lens, &p, NULL, stop_after_3, count, out, out_lens) == GPTC_OK,
          "generate_batch: %s", gptc_last_error());
    CHECK(out_lens[0] == 3 && out_lens[1] == 3, "the callback stops each prompt after 3 tokens: %zu %zu",
          out_lens[0], out_lens[1]);
    free(out[0]);
    free(out[1]);
    CHECK(gptc_generate_batch(m, NULL, 0, NULL, NULL, &p, NULL, NULL, NULL, NULL, NULL) == GPTC_OK,
          "no prompts: nothing to do");
    gptc_model_free(m);
}

/* 1 if the logits are bitwise equal; else prints how far apart they are. */
static int same_logits(const float *alone, const float *batch, int V) {
    if (memcmp(alone, batch, (size_t)V * sizeof(float)) == 0) return 1;
    double diff = 0, mag = 0;
    int a = 0, b = 0;
    for (int i = 0; i < V; i++) {
        diff = fmax(diff, fabs((double)alone[i] - batch[i]));
        mag = fmax(mag, fabs((double)alone[i]));
        if (alone[i] > alone[a]) a = i;
        if (batch[i] > batch[b]) b = i;
    }
    fprintf(stderr, "    logits differ: max |diff| %.3g, relative %.3g; argmax %d alone, %d in the batch\n", diff,
            diff / (mag > 0 ? mag : 1), a, b);
    return 0;
}

/*
 * The backend's paged pass is batch-invariant to the bit: three sequences'
 * prompts in one pass (their blocks handed out in a scrambled order), then a
 * decode token of each in one pass, give exactly the logits each sequence
 * gets alone in a session. Token ids alone would hide rounding differences
 * behind the margins of random weights; this is what makes "identical to one
 * at a time" hold for every model, not just these.
 *
 * The CUDA backend is held to the same bits: its pass runs each sequence's
 * tokens through the kernels and launch shapes a session uses for them
 * (src/cuda/paged.cu says how), so no tolerance is needed there either. On
 * a mismatch the size of the difference is printed, to tell a broken
 * invariant (rounding-sized differences) from a wrong result.
 */
static void test_pass_invariance(const char *name) {
    gptc_model *m = load(name);
    if (!m) return;
    const gptc_backend_ops *be = m->backend;
    if (!be->kv_eval) {
        fprintf(stderr, "  %s: the %s backend has no paged pass: skipped\n", name, be->name);
        gptc_model_free(m);
        return;
    }
    const gptc_config *c = gptc_model_config(m);
    int V = c->n_vocab;
    enum { NS = 3, BS = 16 };
    size_t len[NS] = {5, 17, 33};
    int32_t prompt[NS][34], tables[NS][4];
    /* blocks 0..11, scrambled: sequence s gets blocks 11 - s, 8 - s, ... */
    for (int s = 0; s < NS; s++)
        for (int k = 0; k < 4; k++) tables[s][k] = 11 - s - 3 * k;
    for (int s = 0; s < NS; s++)
        for (size_t k = 0; k <= len[s]; k++) prompt[s][k] = (int32_t)rnd((uint32_t)V);
    void *kv = NULL;
    float *batch = malloc((size_t)NS * V * sizeof(float)), *alone = malloc((size_t)V * sizeof(float));
    CHECK(be->kv_new(m, 12, BS, &kv) == GPTC_OK && batch && alone, "kv_new: %s", gptc_last_error());
    int32_t ids[64], pos[64], seq[64], rows[NS];
    const int32_t *tab[NS] = {tables[0], tables[1], tables[2]};
    for (int phase = 0; phase < 2 && kv; phase++) {
        int T = 0;
        for (int s = 0; s < NS; s++) {
            size_t from = phase ? len[s] : 0, to = phase ? len[s] + 1 : len[s];
            for (size_t k = from; k < to; k++, T++) ids[T] = prompt[s][k], pos[T] = (int32_t)k, seq[T] = s;
            rows[s] = T - 1;
        }
        gptc_pass p = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .tables = tab, .n_logits = NS,
                       .logit_rows = rows};
        CHECK(be->kv_eval(m, kv, &p, batch) == GPTC_OK, "kv_eval: %s", gptc_last_error());
        for (int s = 0; s < NS; s++) {
            gptc_session *ss = NULL;
            size_t n = phase ? len[s] + 1 : len[s];
            CHECK(gptc_session_new(m, (int32_t)n, &ss) == GPTC_OK &&
                      gptc_session_eval(ss, prompt[s], len[s], phase ? 0 : 1, alone) == GPTC_OK &&
                      (!phase || gptc_session_eval(ss, &prompt[s][len[s]], 1, 1, alone) == GPTC_OK),
                  "session: %s", gptc_last_error());
            gptc_session_free(ss);
            CHECK(same_logits(alone, batch + (size_t)s * V, V),
                  "%s, %s: sequence %d's logits in a batch are bitwise those it gets alone", name,
                  phase ? "decode" : "prefill", s);
        }
        /* The same pass again (it rewrites the same K/V) with some rows'
         * argmax picked by the backend: their argmax is the host's, the
         * other rows' logits are unchanged. Decode: every row (a graph). */
        uint8_t am[NS] = {0, 1, 0};
        if (phase) memset(am, 1, sizeof am);
        int32_t picked[NS] = {-1, -1, -1};
        float *again = malloc((size_t)NS * V * sizeof(float));
        p.argmax_only = am;
        p.next = picked;
        CHECK(again && be->kv_eval(m, kv, &p, again) == GPTC_OK, "kv_eval, argmax_only: %s", gptc_last_error());
        for (int s = 0; s < NS && again; s++) {
            if (am[s])
                CHECK(picked[s] == sample_argmax(batch + (size_t)s * V, V),
                      "%s, %s: sequence %d's argmax from the backend (%d) is the host's (%d)", name,
                      phase ? "decode" : "prefill", s, picked[s], sample_argmax(batch + (size_t)s * V, V));
            else
                CHECK(same_logits(batch + (size_t)s * V, again + (size_t)s * V, V),
                      "%s, %s: sequence %d's logits beside rows picked by argmax", name,
                      phase ? "decode" : "prefill", s);
        }
        free(again);
    }
    /* kv_copy: sequence 0's block (6 positions) copied to the unused block 0
     * continues as the original would. */
    if (kv) {
        static const int32_t copy_table[1] = {0};
        const int32_t *ct[1] = {copy_table};
        int32_t next[7], z = 0, p6 = 6;
        memcpy(next, prompt[0], 6 * sizeof *next);
        next[6] = 7;
        CHECK(be->kv_copy(m, kv, 0, tables[0][0], 6) == GPTC_OK, "kv_copy: %s", gptc_last_error());
        gptc_pass p = {.n_tokens = 1, .ids = &next[6], .pos = &p6, .seq = &z, .tables = ct, .n_logits = 1,
                       .logit_rows = &z};
        gptc_session *ss = NULL;
        CHECK(be->kv_eval(m, kv, &p, batch) == GPTC_OK && gptc_session_new(m, 7, &ss) == GPTC_OK &&
                  gptc_session_eval(ss, next, 7, 1, alone) == GPTC_OK,
              "after kv_copy: %s", gptc_last_error());
        gptc_session_free(ss);
        CHECK(same_logits(alone, batch, V), "%s: a copied block continues with the original's logits", name);
    }
    if (kv) be->kv_free(m, kv);
    free(batch);
    free(alone);
    gptc_model_free(m);
}

/*
 * gptc_pass.fast_decode: with 8 or more short-segment tokens the CUDA pass
 * runs their products through cuBLASLt, summing in another order than a
 * session, so the logits need only be close (a product wired to the wrong
 * rows or weights is off by far more than rounding). The CPU ignores the
 * flag and stays bitwise equal. Prompts of 2 to 5 tokens (short segments:
 * the prefill pass takes the fast path too), then one decode pass, twice
 * (the second replays its graph).
 */
static void test_fast_decode(const char *name) {
    gptc_model *m = load(name);
    if (!m) return;
    const gptc_backend_ops *be = m->backend;
    if (!be->kv_eval) {
        gptc_model_free(m);
        return;
    }
    int V = gptc_model_config(m)->n_vocab;
    enum { NS = 10, BS = 16 };
    int32_t prompt[NS][8], tables[NS][1];
    size_t len[NS];
    const int32_t *tab[NS];
    for (int s = 0; s < NS; s++) {
        len[s] = 2 + (size_t)s % 4;
        for (size_t k = 0; k < 8; k++) prompt[s][k] = (int32_t)rnd((uint32_t)V);
        tables[s][0] = NS - 1 - s;
        tab[s] = tables[s];
    }
    void *kv = NULL;
    float *batch = malloc((size_t)NS * V * sizeof(float)), *alone = malloc((size_t)V * sizeof(float));
    CHECK(be->kv_new(m, NS, BS, &kv) == GPTC_OK && batch && alone, "kv_new: %s", gptc_last_error());
    int32_t ids[64], pos[64], seq[64], rows[NS];
    double worst = 0;
    for (int phase = 0; phase < 3 && kv; phase++) {
        int T = 0;
        for (int s = 0; s < NS; s++) {
            size_t from = phase ? len[s] + (size_t)phase - 1 : 0, to = phase ? from + 1 : len[s];
            for (size_t k = from; k < to; k++, T++) ids[T] = prompt[s][k], pos[T] = (int32_t)k, seq[T] = s;
            rows[s] = T - 1;
        }
        gptc_pass p = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .tables = tab, .n_logits = NS,
                       .logit_rows = rows, .fast_decode = 1};
        CHECK(be->kv_eval(m, kv, &p, batch) == GPTC_OK, "kv_eval, fast_decode: %s", gptc_last_error());
        for (int s = 0; s < NS; s++) {
            gptc_session *ss = NULL;
            size_t n = len[s] + (size_t)phase;
            CHECK(gptc_session_new(m, (int32_t)n, &ss) == GPTC_OK &&
                      gptc_session_eval(ss, prompt[s], n, 1, alone) == GPTC_OK,
                  "session: %s", gptc_last_error());
            gptc_session_free(ss);
            double diff = 0, mag = 0;
            for (int i = 0; i < V; i++) {
                diff = fmax(diff, fabs((double)alone[i] - batch[(size_t)s * V + i]));
                mag = fmax(mag, fabs((double)alone[i]));
            }
            double rel = diff / (mag > 0 ? mag : 1);
            worst = fmax(worst, rel);
            CHECK(rel <= 1e-2, "%s, fast_decode, pass %d: sequence %d's logits within 1%% of its own (%.3g)", name,
                  phase, s, rel);
        }
    }
    fprintf(stderr, "  %s: fast_decode logits within %.3g (relative) of a session's\n", name, worst);
    if (kv) be->kv_free(m, kv);
    free(batch);
    free(alone);
    gptc_model_free(m);
}

/*
 * gptc_batch_logprobs: each event's log-probability and top tokens are those
 * of the log-softmax of the raw logits a session gets for the same sequence
 * (computed here in float64 from gptc_session_eval), whatever the request's
 * processors; asking for them does not change the tokens (on the CPU, where
 * every draw is the host's: on CUDA a sampled request with logprobs draws on
 * the host instead of the device, so only greedy ids are compared there).
 */
static void test_logprobs(const char *name) {
    gptc_model *m = load(name);
    if (!m) return;
    int V = gptc_model_config(m)->n_vocab;
    enum { NR = 3, NEW = 6 };
    int32_t prompt[NR][4] = {{11, 22, 33, 44}, {5, 6, 7, 8}, {9, 8, 7, 6}};
    int32_t n_top[NR] = {5, 3, -1};
    gptc_generate_params p[NR];
    for (int r = 0; r < NR; r++) {
        p[r] = gptc_generate_default_params(m);
        p[r].max_new_tokens = NEW;
        p[r].n_eos_token_ids = 0;
    }
    p[1].do_sample = 1, p[1].temperature = 0.8f, p[1].top_k = 20, p[1].repetition_penalty = 1.3f, p[1].seed = 7;
    gptc_batch *b = NULL;
    uint64_t id[NR];
    CHECK(gptc_batch_new(m, NULL, NULL, &b) == GPTC_OK, "batch: %s", gptc_last_error());
    if (!b) {
        gptc_model_free(m);
        return;
    }
    for (int r = 0; r < NR; r++) {
        CHECK(gptc_batch_add(b, prompt[r], 4, &p[r], &id[r]) == GPTC_OK, "add: %s", gptc_last_error());
        if (n_top[r] >= 0)
            CHECK(gptc_batch_logprobs(b, id[r], n_top[r]) == GPTC_OK, "logprobs: %s", gptc_last_error());
    }
    CHECK(gptc_batch_logprobs(b, id[0], GPTC_MAX_TOP_LOGPROBS + 1) == GPTC_ERR_ARG &&
              strstr(gptc_last_error(), "logprobs"),
          "n_top over the maximum refused: %s", gptc_last_error());
    CHECK(gptc_batch_logprobs(b, 999, 1) == GPTC_ERR_ARG, "an unknown id refused");
    int32_t got[NR][NEW];
    float lp[NR][NEW], top_lp[NR][NEW][GPTC_MAX_TOP_LOGPROBS];
    int32_t top_id[NR][NEW][GPTC_MAX_TOP_LOGPROBS], ntop[NR][NEW];
    int n_got[NR] = {0}, left = NR, steps = 0;
    while (left && steps++ < 3 * NEW) {
        const gptc_batch_event *ev;
        size_t n;
        if (gptc_batch_step(b, &ev, &n) != GPTC_OK) {
            CHECK(0, "step: %s", gptc_last_error());
            break;
        }
        if (steps == 1)
            CHECK(gptc_batch_logprobs(b, id[2], 1) == GPTC_ERR_ARG, "logprobs refused once the request started");
        for (size_t e = 0; e < n; e++) {
            int r = (int)(ev[e].id - id[0]);
            if (r < 0 || r >= NR || n_got[r] >= NEW) continue;
            int k = n_got[r]++;
            got[r][k] = ev[e].token;
            lp[r][k] = ev[e].logprob;
            ntop[r][k] = ev[e].n_top;
            for (int t = 0; t < ev[e].n_top && t < GPTC_MAX_TOP_LOGPROBS; t++)
                top_id[r][k][t] = ev[e].top_ids[t], top_lp[r][k][t] = ev[e].top_logprobs[t];
            if (n_top[r] < 0)
                CHECK(isnan(ev[e].logprob) && ev[e].n_top == 0 && !ev[e].top_ids,
                      "no log-probabilities where none were asked for");
            if (ev[e].finish != GPTC_FINISH_NONE) left--;
        }
    }
    gptc_batch_free(b);
    CHECK(left == 0, "%s: every request finished", name);
    float *logits = malloc((size_t)V * sizeof *logits);
    for (int r = 0; r < NR && logits && !left; r++) {
        int32_t *alone = NULL;
        size_t n_alone = 0;
        CHECK(gptc_generate(m, NULL, prompt[r], 4, &p[r], NULL, NULL, &alone, &n_alone) == GPTC_OK,
              "generate: %s", gptc_last_error());
        if (r != 1 || strcmp(g_backend, "cpu") == 0)
            CHECK(same(alone, n_alone, got[r], (size_t)n_got[r]), "%s: request %d's tokens are those it gets alone",
                  name, r);
        free(alone);
        if (n_top[r] < 0) continue;
        gptc_session *ss = NULL;
        CHECK(gptc_session_new(m, 4 + NEW, &ss) == GPTC_OK && gptc_session_eval(ss, prompt[r], 4, 1, logits) == GPTC_OK,
              "session: %s", gptc_last_error());
        int bad = 0;
        for (int k = 0; k < n_got[r] && ss; k++) {
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < V; i++) mx = fmax(mx, logits[i]);
            for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
            double lse = mx + log(sum);
            bad += ntop[r][k] != n_top[r] || fabs(lp[r][k] - ((double)logits[got[r][k]] - lse)) > 1e-5;
            for (int t = 0; t < ntop[r][k]; t++) {
                int32_t i = top_id[r][k][t];
                int above = 0; /* tokens strictly more likely than the t-th: exactly t */
                for (int j = 0; j < V; j++) above += logits[j] > logits[i];
                bad += above != t || fabs(top_lp[r][k][t] - ((double)logits[i] - lse)) > 1e-5 ||
                       (t && top_lp[r][k][t] > top_lp[r][k][t - 1]);
            }
            if (k + 1 < n_got[r]) CHECK(gptc_session_eval(ss, &got[r][k], 1, 1, logits) == GPTC_OK, "eval");
        }
        CHECK(!bad, "%s: request %d's log-probabilities and top %d are a session's log-softmax (%d wrong)", name, r,
              n_top[r], bad);
        gptc_session_free(ss);
    }
    free(logits);
    gptc_model_free(m);
}

int main(int argc, char **argv) {
    if (getenv("GPTC_BATCH_BACKEND")) g_backend = getenv("GPTC_BATCH_BACKEND");
    const char *dts = getenv("GPTC_BATCH_DTYPE");
    if (dts && *dts) {
        if (!strcmp(dts, "f16")) g_dtype = GPTC_DTYPE_F16;
        else if (!strcmp(dts, "bf16")) g_dtype = GPTC_DTYPE_BF16;
        else if (strcmp(dts, "f32")) {
            fprintf(stderr, "GPTC_BATCH_DTYPE: f32, f16 or bf16, not '%s'\n", dts);
            return 2;
        }
    }
    const char *only = argc > 1 ? argv[1] : NULL;
    const char *shape = getenv("GPTC_BATCH_SHAPE");
    if (shape && *shape) { /* that shape alone (the GPU checks) */
        char name[64];
        snprintf(name, sizeof name, "shape:%s", shape);
        test_model(name);
        test_ahead(name);
        printf("%d checks, %d failed (%s backend, %s)\n", g_checks, g_fail, g_backend, name);
        return g_fail ? 1 : 0;
    }
    static const char *models[] = {"base-gelu_new", "gpt2vocab-f16", "eos-tanh", "untied-relu",
                                   "sharded-f16-silu", "orig-f32-gelu"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        if (!only || strstr(models[i], only)) {
            test_model(models[i]);
            fprintf(stderr, "  %-24s done\n", models[i]);
        }
    if (!only) {
        test_pass_invariance("base-gelu_new");
        test_pass_invariance("gpt2vocab-f16");
        test_pass_invariance("orig-f32-gelu");
        test_fast_decode("gpt2vocab-f16");
        test_fast_decode("orig-f32-gelu");
        test_logprobs("gpt2vocab-f16");
        test_logprobs("orig-f32-gelu");
        test_ahead("gpt2vocab-f16");
        test_ahead("base-gelu_new");
        test_stops();
        test_api();
        test_callback();
    }
    printf("%d checks, %d failed (%s backend)\n", g_checks, g_fail, g_backend);
    return g_fail ? 1 : 0;
}
