/*
 * test_beam.c - beam search against transformers, through the library.
 *
 * Every tests/fixtures/<name>/beam.json (written by tools/make_fixtures.py)
 * holds generate() cases with num_beams > 1 run by transformers in float64:
 * each case must return the same sequences, in the same order, and scores
 * within SCORE_TOL. The ids are safe to compare exactly: the fixture script
 * kept only cases that a float32 checkpoint and noisy float64 runs reproduce.
 * Also: the parameter checks, gptc_generate's beam path, generation_config.json
 * defaults and the backend's session copy.
 *
 *     GPTC_ROOT=. build/tests/test_beam [FILTER]
 *
 * GPTC_BEAM_BACKEND=cuda runs it all on the CUDA backend (fp32 weights), whose
 * session copy is then the one under test.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "gptc.h"
#include "internal.h"
#include "check.h"

/* Relative to max(1, |score|). Scores are sums of up to 16 log-probabilities
 * over a length power; float32 logits of these checkpoints are within ~2e-5 of
 * float64. Measured: at most 1.5e-5 over the fixtures, 6e-5 over 150 random
 * unfiltered configurations (the worst error is printed). */
#define SCORE_TOL 5e-4

static const char *g_backend = "cpu";
/* fp32 unless GPTC_BEAM_DTYPE says f16 / bf16: on CUDA those take the
 * tensor-core products, whose batch invariance the bitwise checks then test. */
static gptc_dtype g_dtype = GPTC_DTYPE_F32;

static char *fixtures_dir(void) {
    const char *root = getenv("GPTC_ROOT");
    return gptc_path_join(root ? root : ".", "tests/fixtures");
}

static gptc_model_params model_params(int n_threads) {
    gptc_model_params mp = gptc_model_default_params();
    mp.n_threads = n_threads;
    mp.backend = g_backend;
    mp.dtype = g_dtype;
    return mp;
}

static gptc_model *load_model(const char *dir) {
    gptc_model_params mp = model_params(2);
    gptc_model *m = NULL;
    if (gptc_model_load(dir, &mp, &m) != GPTC_OK) {
        CHECK(0, "load %s: %s", dir, gptc_last_error());
        return NULL;
    }
    return m;
}

/* ---------------------------------------------------------------- fixtures */

/* transformers generate() kwargs -> params; 0 and a message for one we do not map. */
static int apply_kwargs(gptc_generate_params *p, const cJSON *kw, char *err, size_t n_err) {
    const cJSON *it;
    cJSON_ArrayForEach(it, kw) {
        const char *k = it->string;
        if (!strcmp(k, "max_new_tokens")) p->max_new_tokens = it->valueint;
        else if (!strcmp(k, "num_beams")) p->num_beams = it->valueint;
        else if (!strcmp(k, "num_return_sequences")) p->num_return_sequences = it->valueint;
        else if (!strcmp(k, "length_penalty")) p->length_penalty = it->valuedouble;
        else if (!strcmp(k, "no_repeat_ngram_size")) p->no_repeat_ngram_size = it->valueint;
        else if (!strcmp(k, "min_new_tokens")) p->min_new_tokens = it->valueint;
        else if (!strcmp(k, "repetition_penalty")) p->repetition_penalty = (float)it->valuedouble;
        else if (!strcmp(k, "pad_token_id")) continue; /* one prompt: nothing is padded */
        else if (!strcmp(k, "do_sample") && cJSON_IsFalse(it)) p->do_sample = 0;
        else if (!strcmp(k, "early_stopping")) {
            if (cJSON_IsBool(it))
                p->early_stopping = cJSON_IsTrue(it) ? GPTC_EARLY_STOPPING_TRUE : GPTC_EARLY_STOPPING_FALSE;
            else if (cJSON_IsString(it) && !strcmp(it->valuestring, "never"))
                p->early_stopping = GPTC_EARLY_STOPPING_NEVER;
            else {
                snprintf(err, n_err, "early_stopping value not understood");
                return 0;
            }
        } else if (!strcmp(k, "eos_token_id")) {
            p->n_eos_token_ids = 0;
            if (cJSON_IsNumber(it)) p->eos_token_ids[p->n_eos_token_ids++] = it->valueint;
            else {
                const cJSON *e;
                cJSON_ArrayForEach(e, it) {
                    if (p->n_eos_token_ids == GPTC_MAX_EOS) break;
                    p->eos_token_ids[p->n_eos_token_ids++] = e->valueint;
                }
            }
        } else {
            snprintf(err, n_err, "kwarg '%s' has no mapping", k);
            return 0;
        }
    }
    return 1;
}

static int32_t *int_array(const cJSON *a, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(a);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    if (!v) return NULL;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) v[i++] = e->valueint;
    return v;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
    fprintf(stderr, "    %s (%zu):", what, n);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

typedef struct {
    int cases, identical, sequences;
    double worst_score_err;
} fixture_stats;

static int collect_ids(int32_t id, void *user) {
    int32_t **w = user;
    *(*w)++ = id;
    return 0;
}

static void run_case(gptc_model *m, const char *fx, const cJSON *c, fixture_stats *fs) {
    const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
    size_t n_prompt;
    int32_t *prompt = int_array(cJSON_GetObjectItem(c, "prompt"), &n_prompt);
    const cJSON *outs = cJSON_GetObjectItem(c, "outputs"), *scores = cJSON_GetObjectItem(c, "scores");
    gptc_generate_params p = gptc_generate_default_params(m);
    char err[128] = "";
    fs->cases++;
    if (!prompt || !apply_kwargs(&p, cJSON_GetObjectItem(c, "kwargs"), err, sizeof err)) {
        CHECK(0, "%s/%s: %s", fx, name, prompt ? err : "out of memory");
        free(prompt);
        return;
    }
    size_t n_ret = (size_t)p.num_return_sequences, lens[64] = {0};
    float sc[64];
    int32_t *ids = NULL;
    gptc_status st = gptc_generate_beams(m, NULL, prompt, n_prompt, &p, &ids, lens, sc);
    CHECK(st == GPTC_OK, "%s/%s: gptc_generate_beams: %s", fx, name, gptc_last_error());
    CHECK((size_t)cJSON_GetArraySize(outs) == n_ret, "%s/%s: %d expected sequences for %zu returned",
          fx, name, cJSON_GetArraySize(outs), n_ret);
    int same = st == GPTC_OK && (size_t)cJSON_GetArraySize(outs) == n_ret;
    size_t at = 0;
    for (size_t i = 0; same && i < n_ret; i++) {
        size_t n_exp;
        int32_t *exp = int_array(cJSON_GetArrayItem(outs, (int)i), &n_exp);
        int ok = exp && n_exp == lens[i] && !memcmp(exp, ids + at, n_exp * sizeof *exp);
        CHECK(ok, "%s/%s: sequence %zu of %zu differs", fx, name, i + 1, n_ret);
        if (!ok && exp) {
            print_ids("expected", exp, n_exp);
            print_ids("got     ", ids + at, lens[i]);
        }
        double ref = cJSON_GetArrayItem(scores, (int)i)->valuedouble, d = fabs(sc[i] - ref);
        if (d > fs->worst_score_err) fs->worst_score_err = d;
        CHECK(d <= SCORE_TOL * fmax(1.0, fabs(ref)), "%s/%s: score %zu: expected %.9g, got %.9g", fx,
              name, i + 1, ref, (double)sc[i]);
        same &= ok;
        at += lens[i];
        fs->sequences++;
        free(exp);
    }
    fs->identical += same;

    /* gptc_generate with beams: the best sequence, its ids also through fn. */
    if (same) {
        int32_t *best = NULL, *seen = malloc((lens[0] ? lens[0] : 1) * sizeof *seen), *w = seen;
        size_t n_best = 0;
        st = gptc_generate(m, NULL, prompt, n_prompt, &p, collect_ids, &w, &best, &n_best);
        CHECK(st == GPTC_OK && n_best == lens[0] && !memcmp(best, ids, n_best * sizeof *best) &&
                  (size_t)(w - seen) == n_best && !memcmp(seen, ids, n_best * sizeof *seen),
              "%s/%s: gptc_generate with num_beams %d does not return the best beam", fx, name,
              p.num_beams);
        free(best);
        free(seen);
    }
    free(ids);
    free(prompt);
}

static void test_fixtures(const char *filter) {
    char *root = fixtures_dir();
    DIR *d = root ? opendir(root) : NULL;
    CHECK(d != NULL, "cannot open the fixtures folder %s", root ? root : "(null)");
    if (!d) {
        free(root);
        return;
    }
    char *names[64];
    int n_names = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n_names < 64) {
        if (e->d_name[0] == '.' || (filter && !strstr(e->d_name, filter))) continue;
        char *dir = gptc_path_join(root, e->d_name), *path = dir ? gptc_path_join(dir, "beam.json") : NULL;
        if (path && gptc_file_exists(path)) names[n_names++] = strdup(e->d_name);
        free(dir);
        free(path);
    }
    closedir(d);
    CHECK(n_names >= 3, "only %d fixtures with beam.json in %s", n_names, root);
    int total = 0, total_same = 0, total_seq = 0;
    double worst = 0;
    for (int f = 0; f < n_names; f++) {
        char *dir = gptc_path_join(root, names[f]), *path = gptc_path_join(dir, "beam.json");
        cJSON *j = NULL;
        gptc_model *m = NULL;
        if (gptc_read_json(path, &j) != GPTC_OK) CHECK(0, "%s", gptc_last_error());
        else if ((m = load_model(dir))) {
            fixture_stats fs = {0};
            const cJSON *c;
            cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) run_case(m, names[f], c, &fs);
            printf("  %-40s %2d beam cases, %2d identical (%d sequences), worst score error %.2e\n",
                   names[f], fs.cases, fs.identical, fs.sequences, fs.worst_score_err);
            total += fs.cases;
            total_same += fs.identical;
            total_seq += fs.sequences;
            if (fs.worst_score_err > worst) worst = fs.worst_score_err;
        }
        gptc_model_free(m);
        cJSON_Delete(j);
        free(dir);
        free(path);
        free(names[f]);
    }
    printf("beam fixtures: %d cases, %d identical (%d sequences), worst score error %.2e (tolerance %g)\n",
           total, total_same, total_seq, worst, SCORE_TOL);
    free(root);
}

/* ---------------------------------------------------------------- API */

static gptc_status beams(gptc_model *m, const gptc_generate_params *p, const int32_t *prompt,
                         size_t n, int32_t **ids, size_t *lens, float *scores) {
    return gptc_generate_beams(m, NULL, prompt, n, p, ids, lens, scores);
}

/* One bad parameter: the call fails with `want` and names `word`. */
static void expect_fail(gptc_model *m, const gptc_generate_params *p, gptc_status want,
                        const char *word) {
    static const int32_t prompt[] = {5, 6, 7};
    int32_t *ids = (int32_t *)1;
    size_t lens[8];
    gptc_status st = beams(m, p, prompt, 3, &ids, lens, NULL);
    CHECK(st == want && strstr(gptc_last_error(), word) && ids == NULL,
          "bad %s: status %d (want %d), message '%s'", word, st, want, gptc_last_error());
}

static void test_params(gptc_model *m) {
    gptc_generate_params d = gptc_generate_default_params(m);
    CHECK(d.num_beams == 1 && d.num_return_sequences == 1 && d.length_penalty == 1.0 &&
              d.early_stopping == GPTC_EARLY_STOPPING_FALSE,
          "transformers' beam defaults without generation_config.json entries");
    d.max_new_tokens = 4;
    d.num_beams = 3;
    d.num_return_sequences = 2;
    gptc_generate_params p = d;
    p.num_beams = 0;
    expect_fail(m, &p, GPTC_ERR_ARG, "num_beams");
    p = d;
    p.num_beams = 5000;
    expect_fail(m, &p, GPTC_ERR_ARG, "num_beams");
    p = d;
    p.num_return_sequences = 4;
    expect_fail(m, &p, GPTC_ERR_ARG, "num_return_sequences");
    p.num_return_sequences = 0;
    expect_fail(m, &p, GPTC_ERR_ARG, "num_return_sequences");
    p = d;
    p.length_penalty = NAN;
    expect_fail(m, &p, GPTC_ERR_ARG, "length_penalty");
    p.length_penalty = INFINITY;
    expect_fail(m, &p, GPTC_ERR_ARG, "length_penalty");
    p = d;
    p.early_stopping = (gptc_early_stopping)3;
    expect_fail(m, &p, GPTC_ERR_ARG, "early_stopping");
    p = d;
    p.do_sample = 1;
    expect_fail(m, &p, GPTC_ERR_UNSUPPORTED, "do_sample");
    p = d;
    static const char *stops[] = {"x"};
    p.stop_strings = stops;
    p.n_stop_strings = 1;
    expect_fail(m, &p, GPTC_ERR_UNSUPPORTED, "stop_strings");
    p = d;
    p.top_p = 0; /* the usual checks apply too */
    expect_fail(m, &p, GPTC_ERR_ARG, "top_p");
    static const int32_t prompt[] = {5, 6, 7};
    size_t lens[4];
    int32_t *ids = NULL;
    CHECK(gptc_generate_beams(m, NULL, prompt, 3, &d, NULL, lens, NULL) == GPTC_ERR_ARG &&
              strstr(gptc_last_error(), "out_ids"),
          "out_ids NULL refused: %s", gptc_last_error());
    CHECK(gptc_generate(m, NULL, prompt, 3, &p, NULL, NULL, &ids, lens) == GPTC_ERR_ARG && !ids,
          "gptc_generate with beams checks its parameters: %s", gptc_last_error());

    /* num_beams 1: plain greedy decoding, one sequence without a score. */
    p = d;
    p.num_beams = 1;
    p.num_return_sequences = 1;
    float sc = 0;
    int32_t *g = NULL;
    size_t ng = 0;
    CHECK(beams(m, &p, prompt, 3, &ids, lens, &sc) == GPTC_OK, "num_beams 1: %s", gptc_last_error());
    CHECK(gptc_generate(m, NULL, prompt, 3, &p, NULL, NULL, &g, &ng) == GPTC_OK, "greedy: %s",
          gptc_last_error());
    CHECK(ids && g && lens[0] == ng && !memcmp(ids, g, ng * sizeof *g) && isnan(sc),
          "num_beams 1 is greedy decoding with score NAN");
    free(ids);
    free(g);
    ids = NULL;
    /* max_new_tokens 0: num_return_sequences empty sequences. */
    p = d;
    p.max_new_tokens = 0;
    float scs[2] = {1, 1};
    CHECK(beams(m, &p, prompt, 3, &ids, lens, scs) == GPTC_OK && ids && lens[0] == 0 && lens[1] == 0,
          "max_new_tokens 0: %s", gptc_last_error());
    free(ids);
}

/* A session copied from another continues exactly as the original would. */
static void test_session_copy(gptc_model *m) {
    const gptc_config *c = gptc_model_config(m);
    static const int32_t prompt[] = {11, 12, 13, 14, 15};
    float *a = malloc((size_t)c->n_vocab * sizeof *a), *b = malloc((size_t)c->n_vocab * sizeof *b);
    gptc_session *s = NULL, *t = NULL, *small = NULL;
    int ok = a && b && gptc_session_new(m, 8, &s) == GPTC_OK && gptc_session_new(m, 20, &t) == GPTC_OK &&
             gptc_session_new(m, 3, &small) == GPTC_OK;
    CHECK(ok, "sessions: %s", gptc_last_error());
    if (ok) {
        int32_t junk[] = {1, 2, 3, 4, 5, 6, 7};
        ok = gptc_session_eval(t, junk, 7, 0, NULL) == GPTC_OK && /* overwritten by the copy */
             gptc_session_eval(s, prompt, 5, 0, NULL) == GPTC_OK;
        CHECK(ok && gptc_session_copy(t, s) == GPTC_OK && gptc_session_len(t) == 5,
              "copy into a longer session: %s", gptc_last_error());
        int32_t next = 42;
        ok = gptc_session_eval(s, &next, 1, 1, a) == GPTC_OK && gptc_session_eval(t, &next, 1, 1, b) == GPTC_OK;
        CHECK(ok && !memcmp(a, b, (size_t)c->n_vocab * sizeof *a),
              "the copy continues with the same logits as the original");
        CHECK(gptc_session_copy(small, s) == GPTC_ERR_RANGE && gptc_session_len(small) == 0,
              "copy into a session too short refused: %s", gptc_last_error());
    }
    gptc_session_free(s);
    gptc_session_free(t);
    gptc_session_free(small);
    free(a);
    free(b);
}

/* generation_config.json supplies the beam defaults, as transformers reads it. */
static void test_generation_config(void) {
    char *root = fixtures_dir();
    char *rel = root ? gptc_path_join(root, "base-gelu_new") : NULL;
    /* absolute: the symlinks below live in another folder */
    char cwd[4096], *src = NULL;
    if (rel && rel[0] == '/') src = rel;
    else if (rel && getcwd(cwd, sizeof cwd)) src = gptc_path_join(cwd, rel), free(rel);
    else free(rel);
    char tmpl[] = "/tmp/gptc_beam_XXXXXX";
    char *dir = mkdtemp(tmpl);
    CHECK(src && dir, "temporary folder");
    if (!src || !dir) {
        free(root);
        free(src);
        return;
    }
    static const char *files[] = {"config.json", "model.safetensors"};
    char *paths[3] = {0};
    for (int i = 0; i < 2; i++) {
        char *from = gptc_path_join(src, files[i]);
        paths[i] = gptc_path_join(dir, files[i]);
        CHECK(from && paths[i] && symlink(from, paths[i]) == 0, "symlink %s", files[i]);
        free(from);
    }
    paths[2] = gptc_path_join(dir, "generation_config.json");
    struct {
        const char *json;
        gptc_status want;
        int num_beams, ret;
        double lp;
        gptc_early_stopping es;
    } cases[] = {
        {"{\"num_beams\": 3, \"num_return_sequences\": 2, \"length_penalty\": -0.5, \"early_stopping\": \"never\"}",
         GPTC_OK, 3, 2, -0.5, GPTC_EARLY_STOPPING_NEVER},
        {"{\"num_beams\": 4, \"early_stopping\": true}", GPTC_OK, 4, 1, 1.0, GPTC_EARLY_STOPPING_TRUE},
        {"{\"early_stopping\": null, \"length_penalty\": null}", GPTC_OK, 1, 1, 1.0, GPTC_EARLY_STOPPING_FALSE},
        {"{\"early_stopping\": \"sometimes\"}", GPTC_ERR_FORMAT, 0, 0, 0, GPTC_EARLY_STOPPING_FALSE},
        {"{\"num_beams\": 0}", GPTC_ERR_FORMAT, 0, 0, 0, GPTC_EARLY_STOPPING_FALSE},
        {"{\"length_penalty\": \"long\"}", GPTC_ERR_FORMAT, 0, 0, 0, GPTC_EARLY_STOPPING_FALSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(paths[2], "w");
        if (f) {
            fputs(cases[i].json, f);
            fclose(f);
        }
        gptc_model_params mp = model_params(1);
        gptc_model *m = NULL;
        gptc_status st = gptc_model_load(dir, &mp, &m);
        CHECK(st == cases[i].want, "%s: status %d (%s)", cases[i].json, st, gptc_last_error());
        if (st == GPTC_OK && m) {
            gptc_generate_params p = gptc_generate_default_params(m);
            CHECK(p.num_beams == cases[i].num_beams && p.num_return_sequences == cases[i].ret &&
                      p.length_penalty == cases[i].lp && p.early_stopping == cases[i].es,
                  "%s: defaults %d %d %g %d", cases[i].json, p.num_beams, p.num_return_sequences,
                  p.length_penalty, (int)p.early_stopping);
        } else if (st != GPTC_OK) {
            const char *msg = gptc_last_error();
            CHECK(strstr(msg, "generation_config.json"), "the error names the file: %s", msg);
        }
        gptc_model_free(m);
    }
    for (int i = 0; i < 3; i++) {
        if (paths[i]) unlink(paths[i]);
        free(paths[i]);
    }
    rmdir(dir);
    free(src);
    free(root);
}

/*
 * The paged cache (beams share the prompt's and common prefixes' blocks,
 * copy on write) against one session per beam (GPTC_BEAM_SESSIONS=1): the
 * same hypotheses and scores to the bit, for prompts and lengths that end
 * inside a block and on its edge (blocks of 16 positions).
 */
static void test_paged_vs_sessions(void) {
    char *root = fixtures_dir();
    char *dir = root ? gptc_path_join(root, "gpt2vocab-f16") : NULL;
    gptc_model *m = dir ? load_model(dir) : NULL;
    free(root);
    free(dir);
    if (!m) return;
    static const struct {
        int beams, ret, prompt, max_new, ngram;
        float rep;
    } cases[] = {{2, 2, 3, 20, 0, 1.0f}, {3, 1, 16, 16, 2, 1.0f}, {5, 5, 15, 33, 0, 1.3f},
                 {4, 2, 40, 9, 3, 1.0f}, {8, 3, 1, 48, 0, 1.0f}};
    int V = gptc_model_config(m)->n_vocab;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gptc_generate_params p = gptc_generate_default_params(m);
        p.num_beams = cases[c].beams;
        p.num_return_sequences = cases[c].ret;
        p.max_new_tokens = cases[c].max_new;
        p.no_repeat_ngram_size = cases[c].ngram;
        p.repetition_penalty = cases[c].rep;
        p.n_eos_token_ids = 0; /* run to the full length: every block boundary is crossed */
        int32_t prompt[64];
        for (int i = 0; i < cases[c].prompt; i++) prompt[i] = (int32_t)((i * 7919 + 13 * (int)c) % V);
        int32_t *ids[2] = {NULL, NULL};
        size_t lens[2][8];
        float scores[2][8];
        for (int k = 0; k < 2; k++) {
            if (k) setenv("GPTC_BEAM_SESSIONS", "1", 1);
            gptc_status st = gptc_generate_beams(m, NULL, prompt, (size_t)cases[c].prompt, &p, &ids[k], lens[k],
                                                 scores[k]);
            CHECK(st == GPTC_OK, "case %zu: %s", c, gptc_last_error());
            unsetenv("GPTC_BEAM_SESSIONS");
        }
        size_t total = 0;
        int same = ids[0] && ids[1];
        for (int r = 0; r < cases[c].ret && same; r++) {
            same &= lens[0][r] == lens[1][r] && memcmp(&scores[0][r], &scores[1][r], sizeof(float)) == 0;
            total += lens[0][r];
        }
        same = same && memcmp(ids[0], ids[1], total * sizeof(int32_t)) == 0;
        CHECK(same, "case %zu (%d beams, prompt %d, %d new): paged cache = a session per beam, to the bit", c,
              cases[c].beams, cases[c].prompt, cases[c].max_new);
        free(ids[0]);
        free(ids[1]);
    }
    gptc_model_free(m);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    if (getenv("GPTC_BEAM_BACKEND")) g_backend = getenv("GPTC_BEAM_BACKEND");
    const char *dts = getenv("GPTC_BEAM_DTYPE");
    if (dts && *dts) {
        if (!strcmp(dts, "f16")) g_dtype = GPTC_DTYPE_F16;
        else if (!strcmp(dts, "bf16")) g_dtype = GPTC_DTYPE_BF16;
        else if (strcmp(dts, "f32")) {
            fprintf(stderr, "GPTC_BEAM_DTYPE: f32, f16 or bf16, not '%s'\n", dts);
            return 2;
        }
    }
    gptc_model_params mp = model_params(1);
    gptc_model *m = NULL;
    if (gptc_model_from_shape("tiny", 7, &mp, &m) == GPTC_OK) {
        test_params(m);
        test_session_copy(m);
    } else
        CHECK(0, "gptc_model_from_shape: %s", gptc_last_error());
    gptc_model_free(m);
    test_generation_config();
    test_paged_vs_sessions();
    /* The fixtures are transformers' float64 searches: fp32 reproduces
     * them, the 16-bit dtypes only approximately (then only the checks of
     * the paged engine against sessions, which must hold to the bit). */
    if (g_dtype == GPTC_DTYPE_F32) test_fixtures(filter);
    else printf("fixtures skipped: %s is not f32\n", dts);
    printf("%d checks, %d failed (%s backend)\n", g_checks, g_fail, g_backend);
    return g_fail ? 1 : 0;
}
