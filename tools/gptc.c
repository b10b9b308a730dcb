/*
 * gptc.c - the command-line tool. Uses only the public API (gptc.h).
 *
 *   gptc generate   -m MODEL [--prompt TEXT | --prompt-ids 1,2,3] [options]
 *   gptc tokenize   -m MODEL [--decode]
 *   gptc perplexity -m MODEL --file F [--stride S]
 *   gptc bench      [-m MODEL | --shape NAME] [--prompt-len P] [--new-tokens N] [--json]
 *   gptc info       -m MODEL
 *   gptc logits     -m MODEL --prompt-ids 1,2,3   (last-position logits, for tests)
 *
 * MODEL is a checkpoint folder or a Hugging Face Hub model id (gpt2,
 * org/name; --revision REV), resolved through the Hugging Face cache.
 *
 * Every argument is validated; a bad one gets a one-line message naming it and
 * exit status 2. Library failures exit with status 1.
 */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>

#include "gptc.h"
#include "serve.h"

#define MAX_STOPS 16

/* Prints "gptc: MESSAGE" as exactly one line: newlines that came in through
 * interpolated arguments (a flag value, a path) become spaces. */
#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void err_line(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "gptc: %s\n", buf);
}

static int usage_error(const char *fmt, const char *a, const char *b) {
    char buf[1024];
    snprintf(buf, sizeof buf, fmt, a, b);
    err_line("%s (see --help)", buf);
    return 2;
}

static int lib_error(void) {
    err_line("%s", gptc_last_error());
    return 1;
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno) {
        err_line("%s: '%s' is not an integer", flag, s);
        return 0;
    }
    if (v < lo || v > hi) {
        err_line("%s: %ld is outside [%ld, %ld]", flag, v, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_double(const char *flag, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) {
        err_line("%s: '%s' is not a finite number", flag, s);
        return 0;
    }
    *out = v;
    return 1;
}

/* Parses "1,2,3" (commas and/or whitespace) into a malloc'ed array. */
/* A size in bytes: a number with an optional unit, K/M/G/T (powers of 1024,
 * also written KiB/MiB/GiB/TiB or KB/MB/GB/TB) or B. */
static int parse_size(const char *flag, const char *s, unsigned long long *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0) || !isfinite(v)) {
        err_line("%s: '%s' is not a positive size (e.g. 512MiB, 4GiB)", flag, s);
        return 0;
    }
    static const char *units[] = {"", "B", "K", "KB", "KIB", "M", "MB", "MIB", "G", "GB", "GIB", "T", "TB", "TIB"};
    static const int shift[] = {0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40};
    char u[8] = "";
    size_t n = strlen(end);
    if (n < sizeof u)
        for (size_t i = 0; i <= n; i++) u[i] = (char)((end[i] >= 'a' && end[i] <= 'z') ? end[i] - 32 : end[i]);
    for (size_t i = 0; n < sizeof u && i < sizeof units / sizeof units[0]; i++)
        if (strcmp(u, units[i]) == 0) {
            double bytes = ldexp(v, shift[i]);
            if (bytes >= 18446744073709551615.0) break;
            *out = (unsigned long long)bytes;
            return 1;
        }
    err_line("%s: '%s' is not a size (a number with K, M, G or T, e.g. 4GiB)", flag, s);
    return 0;
}

static int parse_ids(const char *flag, const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return 0;
    const char *p = s;
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX ||
            (*end && *end != ',' && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')) {
            const char *e = p;
            while (*e && *e != ',' && *e != ' ' && *e != '\n') e++;
            err_line("%s: '%.*s' is not a token id (a non-negative integer)", flag,
                    (int)(e - p > 40 ? 40 : e - p), p);
            free(v);
            return 0;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return 0;
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = k;
    return 1;
}

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return NULL;
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, (cap *= 2) + 1);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- shared options ---- */

typedef struct {
    const char *model_dir; /* -m as given: a folder or a Hub model id */
    const char *revision;  /* --revision, for a Hub model id */
    char *resolved;        /* the folder -m resolves to (gptc_hub_resolve) */
    long threads;
    const char *backend;
    int dtype; /* a gptc_dtype, or -1 for the default */
    long device;
} common_opts;

/* Loading progress on a terminal's stderr, once loading has taken long enough
 * to be worth a line (a large checkpoint); the line is erased at the end. */
static void on_load_progress(float fraction, void *user) {
    double *t0 = user;
    if (*t0 < 0) return; /* not a terminal */
    if (fraction >= 1.0f) {
        if (*t0 == 0) fputs("\r\033[K", stderr);
        return;
    }
    if (*t0 > 0 && now_s() - *t0 < 0.5) return;
    *t0 = 0; /* shown: erase it at the end */
    fprintf(stderr, "\rloading the model: %3d%%", (int)(fraction * 100.0f));
    fflush(stderr);
}

static gptc_model_params model_params(const common_opts *o) {
    static double t0;
    t0 = isatty(STDERR_FILENO) ? now_s() : -1.0;
    gptc_model_params mp = gptc_model_default_params();
    mp.n_threads = (int)o->threads;
    mp.backend = o->backend;
    if (o->dtype >= 0) mp.dtype = (gptc_dtype)o->dtype;
    mp.device = (int32_t)o->device;
    mp.progress = on_load_progress;
    mp.progress_user = &t0;
    return mp;
}

/* Handles -m/--model, --revision, --threads, --backend, --dtype and --device;
 * returns 1 if argv[*i] was one of them, 0 if not, -1 on error. */
static int common_flag(int argc, char **argv, int *i, common_opts *o) {
    const char *a = argv[*i];
    if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
        if (*i + 1 >= argc) return usage_error("%s needs a value%s", a, ""), -1;
        o->model_dir = argv[++*i];
        return 1;
    }
    if (strcmp(a, "--revision") == 0) {
        if (*i + 1 >= argc) return usage_error("%s needs a value%s", a, ""), -1;
        o->revision = argv[++*i];
        return 1;
    }
    if (strcmp(a, "--threads") == 0) {
        if (*i + 1 >= argc) return usage_error("%s needs a value%s", a, ""), -1;
        return parse_long(a, argv[++*i], 1, 4096, &o->threads) ? 1 : -1;
    }
    if (strcmp(a, "--device") == 0) {
        if (*i + 1 >= argc) return usage_error("%s needs a value%s", a, ""), -1;
        return parse_long(a, argv[++*i], 0, 1023, &o->device) ? 1 : -1;
    }
    if (strcmp(a, "--backend") == 0) {
        if (*i + 1 >= argc) return usage_error("%s needs a value%s", a, ""), -1;
        o->backend = argv[++*i];
        if (strcmp(o->backend, "cpu") && strcmp(o->backend, "cuda") && strcmp(o->backend, "auto"))
            return usage_error("--backend: '%s' is not cpu, cuda or auto%s", o->backend, ""), -1;
        return 1;
    }
    if (strcmp(a, "--dtype") == 0) {
        if (*i + 1 >= argc) return usage_error("%s needs a value%s", a, ""), -1;
        const char *v = argv[++*i];
        if (strcmp(v, "f16") == 0 || strcmp(v, "fp16") == 0) o->dtype = GPTC_DTYPE_F16;
        else if (strcmp(v, "bf16") == 0) o->dtype = GPTC_DTYPE_BF16;
        else if (strcmp(v, "f32") == 0 || strcmp(v, "fp32") == 0) o->dtype = GPTC_DTYPE_F32;
        else return usage_error("--dtype: '%s' is not f16, bf16 or f32%s", v, ""), -1;
        return 1;
    }
    return 0;
}

/*
 * The folder -m names (a local folder as it is, a Hub model id through the
 * Hugging Face cache, downloading what is missing) into o->resolved. Returns
 * 0, or the exit status after printing the error: 2 for a bad name.
 */
static int resolve_model(common_opts *o) {
    if (o->resolved) return 0;
    if (!o->model_dir) {
        /* No -m: the demo model that comes with gptc, so the first run needs
         * no download. */
        static const char *demo[] = {GPTC_DEMO_MODEL_INSTALLED, GPTC_DEMO_MODEL_SOURCE};
        for (size_t i = 0; i < sizeof demo / sizeof demo[0] && !o->model_dir; i++) {
            char cfg[PATH_MAX];
            int n = snprintf(cfg, sizeof cfg, "%s/config.json", demo[i]);
            if (n > 0 && (size_t)n < sizeof cfg && access(cfg, R_OK) == 0) o->model_dir = demo[i];
        }
        if (!o->model_dir)
            return usage_error("-m MODEL: no model given, and the demo model is in neither %s nor %s",
                               GPTC_DEMO_MODEL_INSTALLED, GPTC_DEMO_MODEL_SOURCE);
    }
    gptc_status st = gptc_hub_resolve(o->model_dir, o->revision, &o->resolved);
    if (st == GPTC_OK) return 0;
    lib_error();
    return st == GPTC_ERR_ARG ? 2 : 1;
}

static int load_model(common_opts *o, gptc_model **m) {
    int rc = resolve_model(o);
    if (rc) return rc;
    gptc_model_params mp = model_params(o);
    if (gptc_model_load(o->resolved, &mp, m) != GPTC_OK) return lib_error();
    return 0;
}

/* ---- generate ---- */

static const char *k_generate_help =
    "usage: gptc generate -m MODEL [--prompt TEXT | --prompt-ids 1,2,3] [options]\n"
    "\n"
    "Generates a continuation of the prompt and streams it to stdout (the prompt\n"
    "itself is not repeated).\n"
    "\n"
    "  -m, --model MODEL           checkpoint folder, or Hugging Face Hub model id (gpt2,\n"
    "                              org/name): taken from the Hugging Face cache, downloaded\n"
    "                              if missing (HF_HUB_OFFLINE=1: never); default: the demo\n"
    "                              model that comes with gptc (models/shakespeare-demo)\n"
    "  --revision REV              Hub branch, tag or commit hash (default main)\n"
    "  --prompt TEXT               prompt text\n"
    "  --prompt-ids IDS            prompt as token ids, comma-separated\n"
    "  --max-new-tokens N          tokens to generate (default: generation_config, else up to\n"
    "                              max_length 20 in all, as transformers)\n"
    "  --min-new-tokens N          forbid eos before N new tokens\n"
    "  --greedy | --do-sample      decoding mode; without either, sampling when --temperature > 0,\n"
    "                              --top-k or --top-p is given, else the model's default\n"
    "  --temperature T             >= 0; 0 means greedy\n"
    "  --top-k K                   keep the K most likely tokens (0: off)\n"
    "  --top-p P                   nucleus sampling, P in (0, 1]\n"
    "  --repetition-penalty R      > 0 (1: off), transformers' semantics\n"
    "  --no-repeat-ngram-size N    never repeat an N-gram (0: off)\n"
    "  --seed S                    seed for sampling (same seed, same output)\n"
    "  --eos-token-id IDS          stop tokens, comma-separated (default: the model's; none: -1)\n"
    "  --num-beams N               beam search with N beams (1: off), transformers' semantics\n"
    "  --length-penalty L          beam scores divided by length^L (default 1)\n"
    "  --early-stopping E          true, false (default) or never, as transformers\n"
    "  --num-return-sequences K    with beams: the K best, best first, one per line\n"
    "  --stop STR                  stop once the text reaches STR (repeatable)\n"
    "  --truncate                  keep the end of a prompt too long for the context\n"
    "                              (otherwise it is an error)\n"
    "  --threads N                 CPU threads (default: all cores)\n"
    "  --backend cpu|cuda|auto     where to run (default auto: cuda when a GPU is usable)\n"
    "  --dtype f16|bf16|f32        weights on the GPU (default f16); the CPU computes in fp32\n"
    "  --device N                  the GPU to run on (CUDA device ordinal, default 0)\n"
    "  --ids                       print only the generated token ids, on one line\n"
    "\n"
    "Many prompts, batched (continuous batching: a finished prompt's place is\n"
    "taken at once):\n"
    "  --prompts-file FILE         one prompt per line (- for stdin); prints one line per\n"
    "                              prompt, in order: the text with \\n, \\r and \\\\ escaped,\n"
    "                              or with --ids the generated ids; same results as one\n"
    "                              prompt at a time\n"
    "  --prompt-ids-file FILE      the same with prompts as token ids, comma-separated\n"
    "  --batch-size N              prompts decoded together (default 32)\n"
    "  --fast-decode               (CUDA) decode tokens share tensor-core products: much\n"
    "                              faster for large batches of large models, but a\n"
    "                              prompt's output may then differ from its output alone\n"
    "                              where two tokens nearly tie\n"
    "  --kv-memory SIZE            cap on the K/V cache, e.g. 512MiB, 4GiB, 1G (default:\n"
    "                              room for the batch at n_positions each); prompts wait\n"
    "                              for room, one that can never fit is an error\n";

typedef struct {
    gptc_detok *detok;
    const gptc_generate_params *params; /* eos ids are not printed as text */
    int failed;
} stream_state;

static int stream_token(int32_t id, void *user) {
    stream_state *s = user;
    for (int32_t e = 0; e < s->params->n_eos_token_ids; e++)
        if (id == s->params->eos_token_ids[e]) return 0;
    const char *text;
    size_t len;
    if (gptc_detok_push(s->detok, id, &text, &len) != GPTC_OK) {
        s->failed = 1;
        return 1;
    }
    if (len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

/* Writes text with \n, \r and \\ escaped, so that it stays on one line. */
static void put_escaped(const char *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\n') fputs("\\n", stdout);
        else if (t[i] == '\r') fputs("\\r", stdout);
        else if (t[i] == '\\') fputs("\\\\", stdout);
        else putchar(t[i]);
    }
}

/*
 * --prompts-file: every line a prompt, all through one gptc_batch, one
 * output line per prompt in the file's order. Errors name the line.
 */
static int generate_file(gptc_model *m, const gptc_tokenizer *tok, const char *path, int lines_are_ids,
                         const gptc_generate_params *p, const gptc_batch_params *bp, int want_ids) {
    if (p->num_beams > 1) {
        err_line("--num-beams: beam search is not batched; with --prompts-file use --num-beams 1");
        return 2;
    }
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        err_line("%s: %s", path, strerror(errno));
        return 1;
    }
    int32_t **prompts = NULL, **outs = NULL;
    size_t *lens = NULL, *out_lens = NULL, n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &line_cap, f)) >= 0) {
        size_t len = (size_t)got;
        if (len && line[len - 1] == '\n') len--;
        if (len && line[len - 1] == '\r') len--;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            int32_t **np = realloc(prompts, cap * sizeof *np);
            size_t *nl = np ? realloc(lens, cap * sizeof *nl) : NULL;
            if (np) prompts = np;
            if (nl) lens = nl;
            if (!np || !nl) { err_line("out of memory"); rc = 1; break; }
        }
        prompts[n] = NULL;
        if (len == 0) {
            err_line("%s:%zu: empty prompt", path, n + 1);
            rc = 2;
            break;
        }
        if (lines_are_ids) {
            line[len] = 0;
            char flag[PATH_MAX + 32];
            snprintf(flag, sizeof flag, "%s:%zu", path, n + 1);
            if (!parse_ids(flag, line, &prompts[n], &lens[n])) {
                rc = 2;
                break;
            }
            if (lens[n] == 0) {
                err_line("%s:%zu: empty prompt", path, n + 1);
                free(prompts[n]);
                rc = 2;
                break;
            }
        } else if (gptc_tokenizer_encode(tok, line, len, &prompts[n], &lens[n]) != GPTC_OK) {
            err_line("%s:%zu: %s", path, n + 1, gptc_last_error());
            rc = 1;
            break;
        }
        n++;
    }
    if (!rc && ferror(f)) {
        err_line("%s: %s", path, strerror(errno));
        rc = 1;
    }
    if (f != stdin) fclose(f);
    free(line);
    if (!rc && n == 0) {
        err_line("%s: no prompts", path);
        rc = 2;
    }
    if (!rc) {
        outs = calloc(n, sizeof *outs);
        out_lens = calloc(n, sizeof *out_lens);
        if (!outs || !out_lens) { err_line("out of memory"); rc = 1; }
    }
    if (!rc && gptc_generate_batch(m, tok, n, (const int32_t *const *)prompts, lens, p, bp, NULL, NULL, outs,
                                   out_lens) != GPTC_OK) {
        /* "prompt N: ..." from the library: N is the line */
        err_line("%s: %s", path, gptc_last_error());
        rc = strstr(gptc_last_error(), "kv_memory") || strstr(gptc_last_error(), "prompt") ? 2 : 1;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        size_t k = out_lens[i];
        if (want_ids) {
            for (size_t j = 0; j < k; j++) printf(j ? " %d" : "%d", outs[i][j]);
        } else {
            /* eos ids are not text, as in the streamed output */
            while (k > 0) {
                int eos = 0;
                for (int32_t e = 0; e < p->n_eos_token_ids; e++) eos |= outs[i][k - 1] == p->eos_token_ids[e];
                if (!eos) break;
                k--;
            }
            char *text = NULL;
            size_t tl = 0;
            if (gptc_tokenizer_decode(tok, outs[i], k, &text, &tl) != GPTC_OK) {
                rc = lib_error();
                break;
            }
            put_escaped(text, tl);
            free(text);
        }
        putchar('\n');
    }
    for (size_t i = 0; i < n; i++) {
        free(prompts[i]);
        if (outs) free(outs[i]);
    }
    free(prompts);
    free(lens);
    free(outs);
    free(out_lens);
    return rc;
}

static int cmd_generate(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    const char *prompt = NULL, *prompt_ids = NULL, *eos_ids = NULL, *prompts_file = NULL;
    int file_ids = 0; /* --prompt-ids-file */
    long batch_size = 0;
    unsigned long long kv_memory = 0;
    const char *stops[MAX_STOPS];
    int n_stops = 0, want_ids = 0, mode = 0; /* mode: 1 greedy, 2 sample */
    int has_temp = 0, has_topk = 0, has_topp = 0, truncate = 0;
    long max_new = -2, min_new = -1, top_k = 0, ngram = -1, seed = -1, beams = -1, n_ret = -1;
    double temp = 1, top_p = 1, rep = -1, len_pen = NAN;
    int early = -1, fast_decode = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = common_flag(argc, argv, &i, &co);
        if (r < 0) return 2;
        if (r) continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(k_generate_help, stdout);
            return 0;
        }
        if (strcmp(a, "--greedy") == 0) { mode = 1; continue; }
        if (strcmp(a, "--do-sample") == 0) { mode = 2; continue; }
        if (strcmp(a, "--ids") == 0) { want_ids = 1; continue; }
        if (strcmp(a, "--truncate") == 0) { truncate = 1; continue; }
        if (strcmp(a, "--fast-decode") == 0) { fast_decode = 1; continue; }
        if (i + 1 >= argc) return usage_error("%s: unknown flag or missing value%s", a, "");
        const char *v = argv[++i];
        if (strcmp(a, "--prompt") == 0) prompt = v;
        else if (strcmp(a, "--prompt-ids") == 0) prompt_ids = v;
        else if (strcmp(a, "--prompts-file") == 0) prompts_file = v, file_ids = 0;
        else if (strcmp(a, "--prompt-ids-file") == 0) prompts_file = v, file_ids = 1;
        else if (strcmp(a, "--batch-size") == 0) { if (!parse_long(a, v, 1, 65536, &batch_size)) return 2; }
        else if (strcmp(a, "--kv-memory") == 0) { if (!parse_size(a, v, &kv_memory)) return 2; }
        else if (strcmp(a, "--max-new-tokens") == 0) { if (!parse_long(a, v, 0, INT32_MAX, &max_new)) return 2; }
        else if (strcmp(a, "--min-new-tokens") == 0) { if (!parse_long(a, v, 0, INT32_MAX, &min_new)) return 2; }
        else if (strcmp(a, "--top-k") == 0) { if (!parse_long(a, v, 0, INT32_MAX, &top_k)) return 2; has_topk = 1; }
        else if (strcmp(a, "--no-repeat-ngram-size") == 0) { if (!parse_long(a, v, 0, INT32_MAX, &ngram)) return 2; }
        else if (strcmp(a, "--seed") == 0) { if (!parse_long(a, v, 0, LONG_MAX, &seed)) return 2; }
        else if (strcmp(a, "--eos-token-id") == 0) eos_ids = v;
        else if (strcmp(a, "--num-beams") == 0) { if (!parse_long(a, v, 1, 1024, &beams)) return 2; }
        else if (strcmp(a, "--num-return-sequences") == 0) { if (!parse_long(a, v, 1, 1024, &n_ret)) return 2; }
        else if (strcmp(a, "--length-penalty") == 0) {
            if (!parse_double(a, v, &len_pen)) return 2;
            if (!isfinite(len_pen)) return usage_error("--length-penalty: %s is not finite%s", v, "");
        } else if (strcmp(a, "--early-stopping") == 0) {
            if (strcmp(v, "true") == 0) early = GPTC_EARLY_STOPPING_TRUE;
            else if (strcmp(v, "false") == 0) early = GPTC_EARLY_STOPPING_FALSE;
            else if (strcmp(v, "never") == 0) early = GPTC_EARLY_STOPPING_NEVER;
            else return usage_error("--early-stopping: %s is not true, false or never%s", v, "");
        }
        else if (strcmp(a, "--temperature") == 0) {
            if (!parse_double(a, v, &temp)) return 2;
            if (temp < 0) return usage_error("--temperature: %s is negative%s", v, "");
            has_temp = 1;
        } else if (strcmp(a, "--top-p") == 0) {
            if (!parse_double(a, v, &top_p)) return 2;
            if (!(top_p > 0 && top_p <= 1)) return usage_error("--top-p: %s is outside (0, 1]%s", v, "");
            has_topp = 1;
        } else if (strcmp(a, "--repetition-penalty") == 0) {
            if (!parse_double(a, v, &rep)) return 2;
            if (!(rep > 0)) return usage_error("--repetition-penalty: %s must be > 0%s", v, "");
        } else if (strcmp(a, "--stop") == 0) {
            if (!*v) return usage_error("--stop: empty string%s%s", "", "");
            if (n_stops == MAX_STOPS) return usage_error("--stop: more than %s stop strings%s", "16", "");
            stops[n_stops++] = v;
        } else return usage_error("%s: unknown flag%s", a, "");
    }
    if (!!prompt + !!prompt_ids + !!prompts_file > 1)
        return usage_error("--prompt, --prompt-ids and --prompts-file / --prompt-ids-file: give one%s%s", "", "");
    if (!prompt && !prompt_ids && !prompts_file)
        return usage_error("no prompt: give --prompt TEXT or --prompt-ids IDS (or --prompts-file FILE)%s%s", "", "");
    if (!prompts_file && (batch_size || kv_memory || fast_decode))
        return usage_error("%s: only with --prompts-file%s",
                           batch_size ? "--batch-size" : kv_memory ? "--kv-memory" : "--fast-decode", "");
    if (prompt && !*prompt) return usage_error("--prompt: empty prompt%s%s", "", "");

    int32_t *ids = NULL, *out = NULL;
    size_t n_ids = 0, n_out = 0;
    if (prompt_ids) {
        if (!parse_ids("--prompt-ids", prompt_ids, &ids, &n_ids)) return 2;
        if (n_ids == 0) {
            free(ids);
            return usage_error("--prompt-ids: empty prompt%s%s", "", "");
        }
    }
    gptc_model *m = NULL;
    gptc_tokenizer *tok = NULL;
    gptc_detok *detok = NULL;
    int rc = load_model(&co, &m);
    if (rc) goto done;
    const gptc_config *cfg = gptc_model_config(m);
    int need_tok = prompt || (prompts_file && !file_ids) || !want_ids || n_stops;
    if (need_tok && gptc_tokenizer_load(co.resolved, &tok) != GPTC_OK) { rc = lib_error(); goto done; }
    if (prompt && gptc_tokenizer_encode(tok, prompt, strlen(prompt), &ids, &n_ids) != GPTC_OK) {
        rc = lib_error();
        goto done;
    }
    if (n_ids == 0 && !prompts_file) { rc = usage_error("--prompt: encodes to no tokens%s%s", "", ""); goto done; }
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] >= cfg->n_vocab) {
            err_line("%s: token id %d is out of range [0, %d)",
                    prompt ? "--prompt" : "--prompt-ids", ids[i], cfg->n_vocab);
            rc = 2;
            goto done;
        }
    gptc_generate_params p = gptc_generate_default_params(m);
    if (max_new >= 0) p.max_new_tokens = (int32_t)max_new;
    if (min_new >= 0) p.min_new_tokens = (int32_t)min_new;
    if (ngram >= 0) p.no_repeat_ngram_size = (int32_t)ngram;
    if (rep > 0) p.repetition_penalty = (float)rep;
    if (seed >= 0) p.seed = (uint64_t)seed;
    if (has_temp) p.temperature = (float)temp;
    if (has_topk) p.top_k = (int32_t)top_k;
    if (has_topp) p.top_p = (float)top_p;
    if (mode == 1) p.do_sample = 0;
    else if (mode == 2) p.do_sample = 1;
    else if ((has_temp && temp > 0) || has_topk || has_topp) p.do_sample = 1;
    if (has_temp && temp == 0) p.do_sample = 0;
    p.stop_strings = stops;
    p.n_stop_strings = (size_t)n_stops;
    p.truncate_prompt = truncate;
    if (eos_ids && strcmp(eos_ids, "-1") == 0) p.n_eos_token_ids = 0;
    else if (eos_ids) {
        int32_t *e = NULL;
        size_t ne = 0;
        if (!parse_ids("--eos-token-id", eos_ids, &e, &ne)) { rc = 2; goto done; }
        if (ne == 0 || ne > GPTC_MAX_EOS) {
            free(e);
            rc = usage_error("--eos-token-id: give 1 to %s ids%s", "8", "");
            goto done;
        }
        for (size_t k = 0; k < ne; k++) p.eos_token_ids[k] = e[k];
        p.n_eos_token_ids = (int32_t)ne;
        free(e);
    }
    if (beams > 0) p.num_beams = (int32_t)beams;
    if (n_ret > 0) p.num_return_sequences = (int32_t)n_ret;
    if (!isnan(len_pen)) p.length_penalty = len_pen;
    if (early >= 0) p.early_stopping = (gptc_early_stopping)early;

    if (prompts_file) {
        gptc_batch_params bp = gptc_batch_default_params();
        if (batch_size) bp.max_batch = (int32_t)batch_size;
        bp.kv_memory = kv_memory;
        bp.fast_decode = fast_decode;
        rc = generate_file(m, tok, prompts_file, file_ids, &p, &bp, want_ids);
        goto done;
    }
    if (p.num_return_sequences > 1) {
        /* Several sequences: one line each, best first. */
        size_t *lens = malloc((size_t)p.num_return_sequences * sizeof *lens);
        if (!lens) { err_line("out of memory"); rc = 1; goto done; }
        if (gptc_generate_beams(m, tok, ids, n_ids, &p, &out, lens, NULL) != GPTC_OK) {
            free(lens);
            rc = lib_error();
            goto done;
        }
        size_t off = 0;
        for (int32_t k = 0; k < p.num_return_sequences && !rc; k++) {
            stream_state ks = {0};
            ks.params = &p;
            if (!want_ids && gptc_detok_new(tok, &ks.detok) != GPTC_OK) { rc = lib_error(); break; }
            for (size_t i = 0; i < lens[k] && !ks.failed; i++) {
                if (want_ids) printf(i ? " %d" : "%d", out[off + i]);
                else stream_token(out[off + i], &ks);
            }
            const char *text;
            size_t len;
            if (!want_ids && gptc_detok_flush(ks.detok, &text, &len) == GPTC_OK && len)
                fwrite(text, 1, len, stdout);
            if (ks.failed) rc = lib_error();
            gptc_detok_free(ks.detok);
            putchar('\n');
            off += lens[k];
        }
        free(lens);
        goto done;
    }

    stream_state ss = {0};
    ss.params = &p;
    if (!want_ids) {
        if (gptc_detok_new(tok, &detok) != GPTC_OK) { rc = lib_error(); goto done; }
        ss.detok = detok;
    }
    if (gptc_generate(m, tok, ids, n_ids, &p, want_ids ? NULL : stream_token, &ss,
                      want_ids ? &out : NULL, want_ids ? &n_out : NULL) != GPTC_OK) {
        rc = lib_error();
        if (!want_ids) fputc('\n', stdout);
        goto done;
    }
    if (ss.failed) { rc = lib_error(); goto done; }
    if (want_ids) {
        for (size_t i = 0; i < n_out; i++) printf(i ? " %d" : "%d", out[i]);
        putchar('\n');
    } else {
        const char *text;
        size_t len;
        if (gptc_detok_flush(detok, &text, &len) == GPTC_OK && len) fwrite(text, 1, len, stdout);
        if (isatty(STDOUT_FILENO)) putchar('\n');
    }
done:
    free(co.resolved);
    free(ids);
    free(out);
    gptc_detok_free(detok);
    gptc_tokenizer_free(tok);
    gptc_model_free(m);
    return rc;
}

/* ---- tokenize ---- */

static const char *k_tokenize_help =
    "usage: gptc tokenize -m MODEL [--revision REV] [--decode]\n"
    "\n"
    "Reads text on stdin and prints its token ids, space-separated, on one line.\n"
    "With --decode, reads token ids (space- or comma-separated) and prints the text.\n";

static int cmd_tokenize(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    int decode = 0;
    for (int i = 1; i < argc; i++) {
        int r = common_flag(argc, argv, &i, &co);
        if (r < 0) return 2;
        if (r) continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(k_tokenize_help, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--decode") == 0) decode = 1;
        else return usage_error("%s: unknown flag%s", argv[i], "");
    }
    int rc = resolve_model(&co);
    if (rc) return rc;
    gptc_tokenizer *tok = NULL;
    if (gptc_tokenizer_load(co.resolved, &tok) != GPTC_OK) {
        free(co.resolved);
        return lib_error();
    }
    size_t len = 0;
    char *in = read_stream(stdin, &len);
    int32_t *ids = NULL;
    size_t n = 0;
    char *text = NULL;
    if (!in) { rc = usage_error("stdin: cannot read%s%s", "", ""); goto done; }
    if (decode) {
        if (strlen(in) != len) { rc = usage_error("stdin: NUL byte in the token ids%s%s", "", ""); goto done; }
        if (!parse_ids("stdin", in, &ids, &n)) { rc = 2; goto done; }
        size_t tl;
        if (gptc_tokenizer_decode(tok, ids, n, &text, &tl) != GPTC_OK) { rc = lib_error(); goto done; }
        fwrite(text, 1, tl, stdout);
    } else {
        if (gptc_tokenizer_encode(tok, in, len, &ids, &n) != GPTC_OK) { rc = lib_error(); goto done; }
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
done:
    free(co.resolved);
    free(in);
    free(ids);
    free(text);
    gptc_tokenizer_free(tok);
    return rc;
}

/* ---- perplexity ---- */

static const char *k_perplexity_help =
    "usage: gptc perplexity -m MODEL --file F [--stride S] [--threads N] [--revision REV]\n"
    "\n"
    "Perplexity of the text in F with the sliding-window recipe of the transformers\n"
    "documentation: windows of n_positions tokens, S apart (default n_positions / 2).\n"
    "The last line is 'perplexity: X'.\n";

static int cmd_perplexity(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    const char *file = NULL;
    long stride = 0;
    for (int i = 1; i < argc; i++) {
        int r = common_flag(argc, argv, &i, &co);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(k_perplexity_help, stdout);
            return 0;
        }
        if (i + 1 >= argc) return usage_error("%s: unknown flag or missing value%s", a, "");
        if (strcmp(a, "--file") == 0) file = argv[++i];
        else if (strcmp(a, "--stride") == 0) { if (!parse_long(a, argv[++i], 1, INT32_MAX, &stride)) return 2; }
        else return usage_error("%s: unknown flag%s", a, "");
    }
    if (!file) return usage_error("--file F: no text file given%s%s", "", "");
    FILE *f = fopen(file, "rb");
    if (!f) {
        err_line("--file: %s: %s", file, strerror(errno));
        return 2;
    }
    size_t len = 0;
    char *text = read_stream(f, &len);
    fclose(f);
    if (!text) return usage_error("--file: %s: cannot read%s", file, "");
    gptc_model *m = NULL;
    gptc_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = load_model(&co, &m);
    if (rc) goto done;
    if (gptc_tokenizer_load(co.resolved, &tok) != GPTC_OK) { rc = lib_error(); goto done; }
    if (gptc_tokenizer_encode(tok, text, len, &ids, &n) != GPTC_OK) { rc = lib_error(); goto done; }
    int32_t n_ctx = gptc_model_config(m)->n_ctx;
    if (stride == 0) stride = n_ctx / 2 > 0 ? n_ctx / 2 : 1;
    if (stride > n_ctx) {
        err_line("--stride: %ld is larger than n_positions = %d", stride, n_ctx);
        rc = 2;
        goto done;
    }
    double ppl;
    double t0 = now_s();
    if (gptc_perplexity(m, ids, n, (int32_t)stride, &ppl) != GPTC_OK) { rc = lib_error(); goto done; }
    printf("tokens: %zu\nstride: %ld\nseconds: %.3f\nperplexity: %.10g\n", n, stride, now_s() - t0, ppl);
done:
    free(co.resolved);
    free(text);
    free(ids);
    gptc_tokenizer_free(tok);
    gptc_model_free(m);
    return rc;
}

/* ---- logits (for tests) ---- */

static int cmd_logits(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    const char *ids_arg = NULL;
    for (int i = 1; i < argc; i++) {
        int r = common_flag(argc, argv, &i, &co);
        if (r < 0) return 2;
        if (r) continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts("usage: gptc logits -m MODEL --prompt-ids 1,2,3\n\nPrints the logits of the last "
                 "position, space-separated, on one line.");
            return 0;
        }
        if (strcmp(argv[i], "--prompt-ids") == 0 && i + 1 < argc) ids_arg = argv[++i];
        else return usage_error("%s: unknown flag or missing value%s", argv[i], "");
    }
    if (!ids_arg) return usage_error("--prompt-ids: required%s%s", "", "");
    int32_t *ids = NULL;
    size_t n = 0;
    if (!parse_ids("--prompt-ids", ids_arg, &ids, &n)) return 2;
    if (!n) {
        free(ids);
        return usage_error("--prompt-ids: empty prompt%s%s", "", "");
    }
    gptc_model *m = NULL;
    gptc_session *s = NULL;
    float *logits = NULL;
    int rc = load_model(&co, &m);
    if (rc) goto done;
    const gptc_config *c = gptc_model_config(m);
    if (n > (size_t)c->n_ctx) {
        err_line("--prompt-ids: %zu tokens exceed n_positions = %d", n, c->n_ctx);
        rc = 2;
        goto done;
    }
    logits = malloc((size_t)c->n_vocab * sizeof *logits);
    if (!logits || gptc_session_new(m, (int32_t)n, &s) != GPTC_OK ||
        gptc_session_eval(s, ids, n, 1, logits) != GPTC_OK) {
        rc = lib_error();
        goto done;
    }
    for (int v = 0; v < c->n_vocab; v++) printf(v ? " %.9g" : "%.9g", (double)logits[v]);
    putchar('\n');
done:
    free(co.resolved);
    free(ids);
    free(logits);
    gptc_session_free(s);
    gptc_model_free(m);
    return rc;
}

/* ---- info ---- */

static const char *k_info_help =
    "usage: gptc info -m MODEL [--revision REV]\n"
    "\n"
    "Describes a checkpoint without loading its weights: the config, the parameter\n"
    "count, the dtypes the tensors are stored in, and the memory each backend needs\n"
    "for the weights and a K/V cache of n_positions tokens (one sequence).\n";

/* "124,439,808" */
static void group_digits(char *buf, size_t n, uint64_t v) {
    char raw[32];
    int len = snprintf(raw, sizeof raw, "%llu", (unsigned long long)v);
    size_t k = 0;
    for (int i = 0; i < len && k + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = raw[i];
    }
    buf[k] = '\0';
}

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

static int cmd_info(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    for (int i = 1; i < argc; i++) {
        int r = common_flag(argc, argv, &i, &co);
        if (r < 0) return 2;
        if (r) continue;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(k_info_help, stdout);
            return 0;
        }
        return usage_error("%s: unknown flag%s", argv[i], "");
    }
    int rc = resolve_model(&co);
    if (rc) return rc;
    gptc_model_info in;
    if (gptc_model_inspect(co.resolved, &in) != GPTC_OK) {
        free(co.resolved);
        return lib_error();
    }
    const gptc_config *c = &in.config;
    char params[32];
    group_digits(params, sizeof params, in.n_params);
    printf("model         %s\n", co.model_dir);
    if (strcmp(co.model_dir, co.resolved) != 0) printf("folder        %s\n", co.resolved);
    printf("layers        %d, heads %d, n_embd %d, n_inner %d\n", c->n_layer, c->n_head, c->n_embd,
           c->n_inner);
    printf("context       %d positions, vocabulary %d\n", c->n_ctx, c->n_vocab);
    printf("activation    %s, layer_norm_epsilon %g\n", c->activation, (double)c->layer_norm_epsilon);
    printf("attention     scale_attn_weights %d, scale_attn_by_inverse_layer_idx %d, "
           "reorder_and_upcast_attn %d\n",
           c->scale_attn_weights, c->scale_attn_by_inverse_layer_idx, c->reorder_and_upcast_attn);
    printf("tokens        bos %d, eos %d (-1: none)\n", c->bos_token_id, c->eos_token_id);
    printf("LM head       %s\n", in.tied ? "tied to wte" : "its own matrix");
    printf("parameters    %s\n", params);
    printf("stored as     ");
    static const char *names[4] = {"F32", "F16", "BF16", "other"};
    int first = 1;
    for (int d = 0; d < 4; d++)
        if (in.n_tensors[d]) {
            printf("%s%s x %u", first ? "" : ", ", names[d], in.n_tensors[d]);
            first = 0;
        }
    printf(" tensors in %u file%s, %.1f MiB\n", in.n_files, in.n_files == 1 ? "" : "s",
           mib(in.file_bytes));
    /* The CPU computes in fp32 from one arena and keeps an fp32 K/V cache; the
     * GPU keeps matrices and its K/V cache in the chosen dtype, biases, norms
     * and position embeddings in fp32 (src/cuda/backend.cu). Activations and
     * workspace add a few MiB. */
    uint64_t kv_elems = 2 * (uint64_t)c->n_layer * (uint64_t)c->n_ctx * (uint64_t)c->n_embd;
    uint64_t cpu_w = 4 * in.n_params, cpu_kv = 4 * kv_elems;
    printf("memory        cpu (fp32)  %9.1f MiB weights + %8.1f MiB K/V cache = %9.1f MiB\n",
           mib(cpu_w), mib(cpu_kv), mib(cpu_w + cpu_kv));
    static const struct {
        const char *name;
        uint64_t es;
    } gpu[] = {{"f16", 2}, {"bf16", 2}, {"f32", 4}};
    for (int k = 0; k < 3; k++) {
        uint64_t w = gpu[k].es * in.n_matrix_params + 4 * (in.n_params - in.n_matrix_params);
        uint64_t kv = gpu[k].es * kv_elems;
        printf("              cuda (%-4s)  %9.1f MiB weights + %8.1f MiB K/V cache = %9.1f MiB%s\n",
               gpu[k].name, mib(w), mib(kv), mib(w + kv), gptc_has_cuda() ? "" : "  (not built)");
    }
    free(co.resolved);
    return 0;
}

/* ---- bench ---- */

/* A JSON string: quotes, backslashes and control characters escaped. */
static void json_str(const char *v) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static const char *k_bench_help =
    "usage: gptc bench [-m MODEL | --shape gpt2|gpt2-medium|gpt2-large|gpt2-xl] [options]\n"
    "\n"
    "Times prefill and batch-1 greedy decode, and the machine's memory copy\n"
    "bandwidth (bytes read + written per second, same thread count) in the same\n"
    "run. --shape builds random weights in memory.\n"
    "\n"
    "  --revision REV     Hub branch, tag or commit of a -m model id (default main)\n"
    "  --prompt-len P     prompt tokens (default 16)\n"
    "  --new-tokens N     decode steps (default 64; 0 times prefill alone)\n"
    "  --threads N        CPU threads (default: all cores)\n"
    "  --backend B        cpu, cuda or auto (default)\n"
    "  --dtype D          f16 (default), bf16 or f32 weights on the GPU\n"
    "  --device N         the GPU (CUDA device ordinal, default 0)\n"
    "  --tokenizer DIR    tokenizer for the tokenize timing (default: the model folder)\n"
    "  --text FILE        text for the tokenize timing (default: none, reported as null)\n"
    "  --kv-cache off     recompute the whole sequence every step (what a missing\n"
    "                     K/V cache costs)\n"
    "  --host-logits      copy the logits to the host and pick the token there every\n"
    "                     step (what keeping them on the GPU saves)\n"
    "  --batch N          N prompts at once through the batch engine (greedy, no eos):\n"
    "                     prefill time, decode ms per step and tokens/s\n"
    "  --fast-decode      with --batch: tensor-core products for the decode tokens\n"
    "                     (CUDA; not bitwise batch-invariant, see generate --help)\n"
    "  --num-beams N      beam search with N beams (no eos, to --new-tokens): tokens/s\n"
    "  --do-sample        decode through generate() by sampling (its processors and\n"
    "                     draw, on the GPU where the backend has them); with\n"
    "  --temperature T, --top-k K, --top-p P, --seed S  (defaults: the model's\n"
    "                     generation config, else 1, 50, 1, 0; T 0: greedy)\n"
    "  --json             one JSON object per line\n";

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values (sorts them). */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Copy bandwidth (bytes read + bytes written per second) with the same
 * number of threads as the model, each copying its own slice: the median of
 * several runs over buffers far larger than the caches (medians on both sides
 * of the decode / copy ratio, since this machine's bandwidth varies). */
static double copy_bandwidth(int n_threads) {
    size_t n = (size_t)256 << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        free(a);
        free(b);
        return NAN;
    }
    memset(a, 1, n);
    memset(b, 2, n);
    double runs[7];
    size_t chunk = (n / (size_t)n_threads + 63) & ~(size_t)63;
    for (int r = 0; r < 7; r++) {
        char *dst = r & 1 ? a : b, *src = r & 1 ? b : a;
        double t = now_s();
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int k = 0; k < n_threads; k++) {
            size_t off = (size_t)k * chunk;
            if (off < n) memcpy(dst + off, src + off, off + chunk <= n ? chunk : n - off);
        }
        t = now_s() - t;
        runs[r] = 2.0 * (double)n / t;
    }
    free(a);
    free(b);
    return median(runs, 7) / 1e9;
}

/* Read-only bandwidth: the ceiling for streaming weights. Each thread sums
 * its slice of a buffer far larger than the caches (filled with non-zero
 * data, so no page is shared); the median of several runs. */
static double read_bandwidth(int n_threads) {
    size_t n = ((size_t)256 << 20) / sizeof(float);
    float *a = malloc(n * sizeof *a);
    if (!a) return NAN;
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double runs[7];
    volatile float sink = 0;
    for (int r = 0; r < 7; r++) {
        double t = now_s();
        float total = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
        {
            /* 32 independent lanes held for the whole slice: the compiler
             * keeps them in vector registers, so the loop is bound by memory,
             * not by add latency. */
            float acc[32] = {0};
            int k = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t per = n / 32 / (size_t)nt * 32, end = k == nt - 1 ? n / 32 * 32 : (size_t)(k + 1) * per;
            for (size_t i = (size_t)k * per; i < end; i += 32)
                for (int j = 0; j < 32; j++) acc[j] += a[i + j];
            for (int j = 0; j < 32; j++) total += acc[j];
        }
        t = now_s() - t;
        sink += total;
        runs[r] = (double)n * sizeof *a / t;
    }
    (void)sink;
    free(a);
    return median(runs, 7) / 1e9;
}

/* Bytes one position of one sequence takes in the K/V cache on the model's
 * backend: fp32 on the CPU, the weights' dtype on a GPU. */
static uint64_t kv_bytes_per_position(const gptc_model *m, int dtype) {
    const gptc_config *c = gptc_model_config(m);
    uint64_t elem = strcmp(gptc_model_backend(m), "cpu") == 0 || dtype == GPTC_DTYPE_F32 ? 4 : 2;
    return 2 * (uint64_t)c->n_layer * (uint64_t)c->n_embd * elem;
}

/* One pass of bench_batch: n prompts of prompt_len ids (a pattern offset by
 * `seed`) added with p, then steps until every sequence is done; the wall
 * time of steps 0 .. cap go to steps[], their count to *n_steps. */
static gptc_status bench_batch_pass(gptc_batch *b, int32_t n_vocab, int32_t *ids, long n, long prompt_len,
                                    long seed, const gptc_generate_params *p, double *steps, long cap,
                                    long *n_steps) {
    gptc_status st;
    for (long k = 0; k < n; k++) {
        for (long i = 0; i < prompt_len; i++) ids[i] = (int32_t)((i * 7919 + 13 * k + seed) % n_vocab);
        if ((st = gptc_batch_add(b, ids, (size_t)prompt_len, p, NULL)) != GPTC_OK) return st;
    }
    *n_steps = 0;
    for (;;) {
        gptc_batch_stats bs = gptc_batch_get_stats(b);
        if (!bs.running && !bs.waiting) return GPTC_OK;
        const gptc_batch_event *ev;
        size_t k;
        double t = now_s();
        if ((st = gptc_batch_step(b, &ev, &k)) != GPTC_OK) return st;
        if (*n_steps <= cap) steps[*n_steps] = now_s() - t;
        (*n_steps)++;
    }
}

/*
 * bench --batch N / --num-beams N: n prompts of prompt_len tokens, greedy,
 * eos off so that every sequence runs new_tokens steps. The first step of
 * the batch takes every prompt (prefill) and gives the first tokens; the
 * others are decode steps of the whole batch.
 */
static int bench_batch(gptc_model *m, const char *name, int dtype, long n, long beams, long prompt_len,
                       long new_tokens, int fast_decode, int json) {
    const gptc_config *c = gptc_model_config(m);
    gptc_generate_params p = gptc_generate_default_params(m);
    p.do_sample = 0;
    p.max_new_tokens = (int32_t)new_tokens;
    p.min_new_tokens = 0;
    p.n_eos_token_ids = 0;
    int32_t *ids = malloc((size_t)prompt_len * sizeof *ids);
    double *steps = malloc((size_t)(new_tokens + 1) * sizeof *steps);
    gptc_batch *b = NULL;
    int rc = 0;
    if (!ids || !steps) { err_line("out of memory"); rc = 1; goto done; }
    double prefill_s = NAN, decode_s = NAN, total_s, decode_total = 0;
    long n_steps = 0;
    int n_pre = 0; /* prefill passes timed */
    if (beams > 1) {
        p.num_beams = (int32_t)beams;
        p.early_stopping = GPTC_EARLY_STOPPING_TRUE;
        for (int pass = 0; pass < 2; pass++) { /* warm-up, then timed */
            for (long i = 0; i < prompt_len; i++) ids[i] = (int32_t)((i * 7919 + 13 + pass) % c->n_vocab);
            int32_t *out = NULL;
            size_t len;
            double t = now_s();
            gptc_status st = gptc_generate_beams(m, NULL, ids, (size_t)prompt_len, &p, &out, &len, NULL);
            total_s = now_s() - t;
            free(out);
            if (st != GPTC_OK) { rc = lib_error(); goto done; }
        }
    } else {
        gptc_batch_params bp = gptc_batch_default_params();
        bp.max_batch = (int32_t)n;
        bp.max_prefill_tokens = (int32_t)(n * prompt_len);
        bp.fast_decode = fast_decode;
        /* Exactly the room the batch needs, in blocks of 16 positions. */
        bp.kv_memory = (uint64_t)n * (uint64_t)((prompt_len + new_tokens + 15) / 16 * 16) * kv_bytes_per_position(m, dtype);
        if (gptc_batch_new(m, NULL, &bp, &b) != GPTC_OK) { rc = lib_error(); goto done; }
        for (int pass = 0; pass < 2; pass++) { /* warm-up (2 tokens), then timed */
            p.max_new_tokens = (int32_t)(pass ? new_tokens : 2);
            double t0 = now_s();
            if (bench_batch_pass(b, c->n_vocab, ids, n, prompt_len, pass, &p, steps, new_tokens, &n_steps) !=
                GPTC_OK) {
                rc = lib_error();
                goto done;
            }
            total_s = now_s() - t0;
        }
        /* The prefill: the median of the timed pass's first step and of
         * prefill-only passes (one new token), as many as fit in about half
         * a second, 9 in all at most - one pass of a large batch is bound by
         * the host's launches and moved by 2x between runs. */
        double pre[9], spent = steps[0];
        pre[n_pre++] = steps[0];
        p.max_new_tokens = 1;
        while (n_pre < 9 && spent < 0.5) {
            long ns;
            if (bench_batch_pass(b, c->n_vocab, ids, n, prompt_len, n_pre, &p, pre + n_pre, 0, &ns) != GPTC_OK) {
                rc = lib_error();
                goto done;
            }
            spent += pre[n_pre++];
        }
        prefill_s = median(pre, n_pre);
        for (long i = 1; i < n_steps && i <= new_tokens; i++) decode_total += steps[i];
        decode_s = n_steps > 1 ? median(steps + 1, (int)(n_steps - 1 < new_tokens ? n_steps - 1 : new_tokens)) : NAN;
    }
    long seqs = beams > 1 ? 1 : n;
    double tok_s = (double)seqs * (double)new_tokens / total_s;
    if (json) {
        printf("{\"model\":");
        json_str(name);
        printf(",\"backend\":\"%s\",\"threads\":%d,\"batch\":%ld,\"num_beams\":%ld,\"prompt_len\":%ld,"
               "\"new_tokens\":%ld,\"fast_decode\":%s,\"total_s\":%.6g,\"tokens_per_s\":%.6g",
               gptc_model_backend(m), gptc_model_n_threads(m), seqs, beams > 1 ? beams : 1, prompt_len,
               new_tokens, fast_decode ? "true" : "false", total_s, tok_s);
        if (beams <= 1)
            printf(",\"prefill_ms\":%.6g,\"decode_ms_per_step\":%.6g,\"decode_tokens_per_s\":%.6g",
                   prefill_s * 1e3, decode_s * 1e3, (double)n / decode_s);
        printf("}\n");
    } else {
        printf("model            %s (%s backend, %d threads)\n", name, gptc_model_backend(m), gptc_model_n_threads(m));
        if (beams > 1)
            printf("beam search      %ld beams, %ld + %ld tokens: %.3f s, %.1f tokens/s\n", beams, prompt_len,
                   new_tokens, total_s, tok_s);
        else {
            printf("batch            %ld prompts of %ld tokens, %ld new tokens each\n", n, prompt_len, new_tokens);
            printf("prefill          %.3f ms (all prompts, and the first token of each; median of %d)\n",
                   prefill_s * 1e3, n_pre);
            printf("decode           %.3f ms/step (median), %.1f tokens/s\n", decode_s * 1e3, (double)n / decode_s);
            printf("total            %.3f s, %.1f tokens/s\n", total_s, tok_s);
        }
    }
done:
    gptc_batch_free(b);
    free(ids);
    free(steps);
    return rc;
}

/* bench --do-sample: each token's arrival, as the time since the one before. */
typedef struct {
    double *steps;
    long n, cap;
    double last;
} bench_clock;

static int bench_tick(int32_t id, void *user) {
    (void)id;
    bench_clock *b = user;
    double t = now_s();
    if (b->n < b->cap) b->steps[b->n++] = t - b->last;
    b->last = t;
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    const char *shape = NULL, *tok_dir = NULL, *text_file = NULL;
    long prompt_len = 16, new_tokens = 64, batch = 0, beams = 0;
    int json = 0, kv_cache = 1, host_logits = 0, fast_decode = 0, do_sample = 0;
    /* NAN / -1: the model's generation defaults */
    double temperature = NAN, top_p = NAN;
    long top_k = -1, seed = 0;
    for (int i = 1; i < argc; i++) {
        int r = common_flag(argc, argv, &i, &co);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(k_bench_help, stdout);
            return 0;
        }
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        if (strcmp(a, "--host-logits") == 0) { host_logits = 1; continue; }
        if (strcmp(a, "--fast-decode") == 0) { fast_decode = 1; continue; }
        if (strcmp(a, "--do-sample") == 0) { do_sample = 1; continue; }
        if (i + 1 >= argc) return usage_error("%s: unknown flag or missing value%s", a, "");
        const char *v = argv[++i];
        if (strcmp(a, "--shape") == 0) shape = v;
        else if (strcmp(a, "--temperature") == 0) {
            if (!parse_double(a, v, &temperature)) return 2;
            if (!(temperature >= 0)) return usage_error("--temperature: %s is negative%s", v, "");
        } else if (strcmp(a, "--top-p") == 0) {
            if (!parse_double(a, v, &top_p)) return 2;
            if (!(top_p > 0 && top_p <= 1)) return usage_error("--top-p: %s is outside (0, 1]%s", v, "");
        }
        else if (strcmp(a, "--top-k") == 0) { if (!parse_long(a, v, 0, INT32_MAX, &top_k)) return 2; }
        else if (strcmp(a, "--seed") == 0) { if (!parse_long(a, v, 0, LONG_MAX, &seed)) return 2; }
        else if (strcmp(a, "--kv-cache") == 0) {
            if (strcmp(v, "on") == 0) kv_cache = 1;
            else if (strcmp(v, "off") == 0) kv_cache = 0;
            else return usage_error("--kv-cache: '%s' is not on or off%s", v, "");
        }
        else if (strcmp(a, "--tokenizer") == 0) tok_dir = v;
        else if (strcmp(a, "--text") == 0) text_file = v;
        else if (strcmp(a, "--prompt-len") == 0) { if (!parse_long(a, v, 1, 1 << 20, &prompt_len)) return 2; }
        else if (strcmp(a, "--new-tokens") == 0) { if (!parse_long(a, v, 0, 1 << 20, &new_tokens)) return 2; }
        else if (strcmp(a, "--batch") == 0) { if (!parse_long(a, v, 1, 65536, &batch)) return 2; }
        else if (strcmp(a, "--num-beams") == 0) { if (!parse_long(a, v, 1, 1024, &beams)) return 2; }
        else return usage_error("%s: unknown flag%s", a, "");
    }
    if (shape && co.model_dir) return usage_error("-m and --shape: give one, not both%s%s", "", "");
    if (!shape && !co.model_dir) shape = "gpt2";
    if (batch && beams > 1) return usage_error("--batch and --num-beams: give one, not both%s%s", "", "");
    if (fast_decode && !batch) return usage_error("--fast-decode: only with --batch%s%s", "", "");
    if (!do_sample && (!isnan(temperature) || !isnan(top_p) || top_k >= 0 || seed))
        return usage_error("--temperature / --top-k / --top-p / --seed: only with --do-sample%s%s", "", "");
    if (do_sample && (batch || beams > 1 || !kv_cache || host_logits))
        return usage_error("--do-sample: not with --batch, --num-beams, --kv-cache off or --host-logits%s%s", "", "");
    if ((batch || beams > 1) && (!kv_cache || host_logits || text_file))
        return usage_error("--batch / --num-beams: not with --kv-cache off, --host-logits or --text%s%s", "", "");
    if ((batch || beams > 1) && new_tokens < 1) return usage_error("--batch / --num-beams: --new-tokens must be >= 1%s%s", "", "");
    /* A download is not part of the load time. */
    int rc = shape ? 0 : resolve_model(&co);
    if (rc) return rc;
    gptc_model *m = NULL;
    gptc_session *s = NULL;
    gptc_tokenizer *tok = NULL;
    float *logits = NULL;
    int32_t *ids = NULL;
    char *text = NULL;
    double *steps = NULL;
    double t0 = now_s();
    if (shape) {
        gptc_model_params mp = model_params(&co);
        if (gptc_model_from_shape(shape, 1, &mp, &m) != GPTC_OK) { rc = lib_error(); goto done; }
    } else if ((rc = load_model(&co, &m))) goto done;
    double load_s = now_s() - t0;
    const gptc_config *c = gptc_model_config(m);
    if (prompt_len + new_tokens > c->n_ctx) {
        err_line("--prompt-len + --new-tokens = %ld exceed n_positions = %d",
                prompt_len + new_tokens, c->n_ctx);
        rc = 2;
        goto done;
    }
    if (batch || beams > 1) {
        rc = bench_batch(m, shape ? shape : co.model_dir, co.dtype >= 0 ? co.dtype : GPTC_DTYPE_F16,
                         batch ? batch : 1, beams, prompt_len, new_tokens, fast_decode, json);
        goto done;
    }
    double tok_mb_s = NAN;
    if (text_file) {
        if (gptc_tokenizer_load(tok_dir ? tok_dir : co.resolved ? co.resolved : ".", &tok) != GPTC_OK) {
            rc = lib_error();
            goto done;
        }
        FILE *f = fopen(text_file, "rb");
        size_t len = 0;
        if (!f || !(text = read_stream(f, &len))) {
            if (f) fclose(f);
            err_line("--text: %s: cannot read", text_file);
            rc = 2;
            goto done;
        }
        fclose(f);
        int32_t *tids;
        size_t tn;
        double t = now_s();
        if (gptc_tokenizer_encode(tok, text, len, &tids, &tn) != GPTC_OK) { rc = lib_error(); goto done; }
        tok_mb_s = (double)len / 1e6 / (now_s() - t);
        free(tids);
    }
    logits = malloc((size_t)c->n_vocab * sizeof *logits);
    ids = malloc((size_t)(prompt_len + new_tokens) * sizeof *ids);
    if (!logits || !ids) { rc = usage_error("out of memory%s%s", "", ""); goto done; }
    for (long i = 0; i < prompt_len; i++) ids[i] = (int32_t)((i * 7919 + 13) % c->n_vocab);
    if (gptc_session_new(m, (int32_t)(prompt_len + new_tokens), &s) != GPTC_OK) { rc = lib_error(); goto done; }
    /* Host memory bandwidth is the ceiling only for the CPU backend; a GPU's
     * is measured by bench/gpu_bench.py on the same card. */
    int on_cpu = strcmp(gptc_model_backend(m), "cpu") == 0;
    double copy_gbs = on_cpu ? copy_bandwidth(gptc_model_n_threads(m)) : NAN;
    double read_gbs = on_cpu ? read_bandwidth(gptc_model_n_threads(m)) : NAN;
    /* Warm-up pass, then the timed prefills: the median of as many as fit
     * in about half a second, at most 9 (one GPU prefill of gpt2 is ~1 ms,
     * and single timings varied by 10% and more between runs). */
    if (gptc_session_eval(s, ids, (size_t)prompt_len, 1, logits) != GPTC_OK) { rc = lib_error(); goto done; }
    double pre[9], spent = 0;
    int n_pre = 0;
    do {
        gptc_session_reset(s);
        double t = now_s();
        if (gptc_session_eval(s, ids, (size_t)prompt_len, 1, logits) != GPTC_OK) { rc = lib_error(); goto done; }
        pre[n_pre] = now_s() - t;
        spent += pre[n_pre++];
    } while (n_pre < 9 && spent < 0.5);
    for (int i = 1; i < n_pre; i++) /* insertion sort: at most 9 */
        for (int j = i; j > 0 && pre[j] < pre[j - 1]; j--) {
            double x = pre[j];
            pre[j] = pre[j - 1], pre[j - 1] = x;
        }
    double prefill_s = pre[n_pre / 2];
    steps = malloc((size_t)(new_tokens ? new_tokens : 1) * sizeof *steps);
    if (!steps) { rc = usage_error("out of memory%s%s", "", ""); goto done; }
    double decode_total = 0;
    /* Greedy steps; where the backend picks the token itself (GPU), only the
     * token id crosses to the host. The two "lessons" modes undo one design
     * choice each: --kv-cache off recomputes the whole sequence every step,
     * --host-logits copies the logits to the host and picks the token there. */
    int32_t next = 0;
    for (int v = 1; v < c->n_vocab; v++)
        if (logits[v] > logits[next]) next = v;
    int on_device = gptc_session_has_greedy(s) && !host_logits;
    long n_steps = new_tokens; /* steps timed */
    if (do_sample && new_tokens) {
        /* generate()'s own loop (its processors and draw on the device
         * where the backend has them): a step is the time between two
         * tokens, the first token's (prefill included) left out. */
        gptc_generate_params gp = gptc_generate_default_params(m);
        gp.do_sample = 1;
        if (!isnan(temperature)) gp.temperature = (float)temperature; /* 0: generate()'s greedy */
        if (top_k >= 0) gp.top_k = (int32_t)top_k;
        if (!isnan(top_p)) gp.top_p = (float)top_p;
        gp.seed = (uint64_t)seed;
        gp.max_new_tokens = (int32_t)new_tokens;
        gp.min_new_tokens = 0;
        gp.n_eos_token_ids = 0; /* every step runs */
        bench_clock bc = {steps, 0, new_tokens, now_s()};
        if (gptc_generate(m, NULL, ids, (size_t)prompt_len, &gp, bench_tick, &bc, NULL, NULL) != GPTC_OK) {
            rc = lib_error();
            goto done;
        }
        if (bc.n != new_tokens) {
            err_line("--do-sample: generate() stopped after %ld of %ld tokens", bc.n, new_tokens);
            rc = 1;
            goto done;
        }
        /* steps[0] held the first token's time: the rest move down one */
        memmove(steps, steps + 1, (size_t)(new_tokens - 1) * sizeof *steps);
        n_steps = new_tokens - 1;
        for (long i = 0; i < n_steps; i++) decode_total += steps[i];
    }
    for (long i = 0; i < new_tokens && !do_sample; i++) {
        double t = now_s();
        ids[prompt_len + i] = next;
        if (!kv_cache) {
            size_t len = (size_t)(prompt_len + i + 1);
            gptc_session_reset(s);
            gptc_status st = on_device
                                 ? (len > 1 ? gptc_session_eval(s, ids, len - 1, 0, NULL) : GPTC_OK)
                                 : gptc_session_eval(s, ids, len, 1, logits);
            if (st == GPTC_OK && on_device) st = gptc_session_eval_greedy(s, next, &next);
            if (st != GPTC_OK) { rc = lib_error(); goto done; }
            if (!on_device) {
                next = 0;
                for (int v = 1; v < c->n_vocab; v++)
                    if (logits[v] > logits[next]) next = v;
            }
        } else if (on_device) {
            if (gptc_session_eval_greedy(s, next, &next) != GPTC_OK) { rc = lib_error(); goto done; }
        } else {
            if (gptc_session_eval(s, &next, 1, 1, logits) != GPTC_OK) { rc = lib_error(); goto done; }
            next = 0;
            for (int v = 1; v < c->n_vocab; v++)
                if (logits[v] > logits[next]) next = v;
        }
        steps[i] = now_s() - t;
        decode_total += steps[i];
    }
    /* The median step, like the bandwidths it is compared with; the mean is
     * reported beside it. */
    double decode_mean_s = n_steps ? decode_total / (double)n_steps : NAN;
    double decode_s = n_steps ? median(steps, (int)n_steps) : NAN;
    double gb = (double)gptc_model_weight_bytes(m) / 1e9;
    double gbs = gb / decode_s;
    const char *name = shape ? shape : co.model_dir;
    if (json) {
        printf("{\"model\":");
        json_str(name);
        printf(",\"backend\":\"%s\",\"threads\":%d,\"prompt_len\":%ld,\"new_tokens\":%ld,"
               "\"kv_cache\":%s,\"host_logits\":%s,\"do_sample\":%s",
               gptc_model_backend(m), gptc_model_n_threads(m), prompt_len, new_tokens,
               kv_cache ? "true" : "false", host_logits ? "true" : "false", do_sample ? "true" : "false");
        const struct {
            const char *key;
            double v;
        } f[] = {{"weights_gb", gb},
                 {"load_s", load_s},
                 {"prefill_ms", prefill_s * 1e3},
                 {"prefill_tokens_per_s", (double)prompt_len / prefill_s},
                 {"decode_ms_per_token", decode_s * 1e3},
                 {"decode_mean_ms_per_token", decode_mean_s * 1e3},
                 {"decode_gb_per_s", gbs},
                 {"copy_gb_per_s", copy_gbs},
                 {"decode_fraction_of_copy", gbs / copy_gbs},
                 {"read_gb_per_s", read_gbs},
                 {"decode_fraction_of_read", gbs / read_gbs},
                 {"tokenize_mb_per_s", tok_mb_s}};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
            if (isfinite(f[i].v)) printf(",\"%s\":%.6g", f[i].key, f[i].v);
            else printf(",\"%s\":null", f[i].key);
        }
        printf("}\n");
    } else {
        printf("model            %s (%s backend, %d threads)\n", name, gptc_model_backend(m),
               gptc_model_n_threads(m));
        printf("prefill          %ld tokens: %.3f ms (median of %d), %.1f tokens/s\n", prompt_len,
               prefill_s * 1e3, n_pre, (double)prompt_len / prefill_s);
        if (n_steps)
            printf("decode           %.3f ms/token (median; mean %.3f), weights read at %.2f GB/s%s\n",
                   decode_s * 1e3, decode_mean_s * 1e3, gbs,
                   !do_sample ? "" : temperature == 0 ? " (generate(), greedy)" : " (sampling)");
        if (isfinite(copy_gbs)) {
            printf("memory copy      %.2f GB/s (read + write)\n", copy_gbs);
            if (n_steps) printf("decode/copy      %.1f%%\n", 100 * gbs / copy_gbs);
            printf("memory read      %.2f GB/s", read_gbs);
            if (n_steps) printf(" (decode reaches %.1f%% of it)", 100 * gbs / read_gbs);
            printf("\n");
        }
        if (!isnan(tok_mb_s)) printf("tokenize         %.2f MB/s\n", tok_mb_s);
    }
done:
    free(co.resolved);
    free(logits);
    free(ids);
    free(text);
    free(steps);
    gptc_session_free(s);
    gptc_tokenizer_free(tok);
    gptc_model_free(m);
    return rc;
}

/* ---- serve (tools/serve*.c): the CLI's model flags and loading, lent ---- */

static int serve_model_flag(void *o, int argc, char **argv, int *i) { return common_flag(argc, argv, i, o); }

static int serve_load_model(void *o, int device, gptc_model **m, const char **dir) {
    if (device >= 0) ((common_opts *)o)->device = device;
    int rc = load_model(o, m);
    *dir = ((common_opts *)o)->resolved;
    return rc;
}

static int cmd_serve(int argc, char **argv) {
    common_opts co = {.dtype = -1};
    serve_cli cli = {.opts = &co, .model_flag = serve_model_flag, .load_model = serve_load_model,
                     .parse_size = parse_size, .parse_long = parse_long};
    int rc = serve_main(argc, argv, &cli);
    free(co.resolved);
    return rc;
}

static const char *k_help =
    "usage: gptc COMMAND [options]   (gptc COMMAND --help for each)\n"
    "\n"
    "  generate     generate text from a prompt\n"
    "  tokenize     text to token ids, or back with --decode\n"
    "  perplexity   perplexity of a text file\n"
    "  bench        time prefill and decode\n"
    "  info         a model's config, parameters, dtypes and the memory it needs\n"
    "  logits       last-position logits of a prompt (for tests)\n"
    "  serve        an OpenAI-compatible HTTP server (continuous batching, streaming)\n"
    "  --version    print the version and the backends built in\n"
    "\n"
    "MODEL (-m) is a checkpoint folder or a Hugging Face Hub model id (gpt2, org/name,\n"
    "with --revision REV), found in the Hugging Face cache or downloaded into it, as\n"
    "transformers' from_pretrained does. Environment: HF_HUB_CACHE, HF_HOME (the cache),\n"
    "HF_ENDPOINT, HF_TOKEN (gated and private models), HF_HUB_OFFLINE=1 (cache only).\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(k_help, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(k_help, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("gptc %s\n", GPTC_VERSION);
        printf(gptc_has_cuda() ? "backends: cpu, cuda\n" : "backends: cpu (built without CUDA)\n");
        return 0;
    }
    if (strcmp(cmd, "generate") == 0) return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "perplexity") == 0) return cmd_perplexity(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "logits") == 0) return cmd_logits(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 1, argv + 1);
    err_line("unknown command '%s' (see gptc --help)", cmd);
    return 2;
}
