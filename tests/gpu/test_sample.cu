/*
 * test_sample.cu - the device sampler (src/cuda/sample.cu) against the CPU's
 * sampling.c, run in generate()'s order (needs a GPU).
 *
 * At V = 1, 7, 1000, 50257 and 100003 (the last two with the scores in shared
 * and in global memory on Hopper), with random logits, logits full of ties
 * and logits with -inf entries:
 *   - greedy with each processor on and off: the same id as the CPU and
 *     bitwise the same processed scores;
 *   - sampling (temperature, top-k, top-p, with and without processors): the
 *     same processed scores, except top-p boundary tokens whose ascending
 *     cumulative probability is within 1e-6 of the cut (printed); the drawn
 *     id equals sample_categorical(device scores, sample_uniform(seed, step))
 *     in at least 99.9% of the draws and is never a filtered token;
 *   - frequencies of 20000 draws of a fixed distribution against its
 *     probabilities (chi-square and per-token 5-sigma bounds);
 *   - determinism (the same call twice), the state (step, hist, present,
 *     pos) and cuda_mark_present.
 * Then times the kernel at V = 50257 with CUDA events. --quick runs a small
 * subset (for compute-sanitizer), --timing only the timing, --vmax V skips larger
 * vocabularies. Prints one line per case; exits 1 on any
 * failure.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "sampling.h"
}
#include "kernels.cuh"

#ifdef GPTC_SAMPLE_PROFILE /* see sample.cu: stage timings for tuning */
void cuda_sample_profile(long long out[16]);
#endif

#define CK(call)                                                                                \
    do {                                                                                        \
        cudaError_t e_ = (call);                                                                \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                            \
        }                                                                                       \
    } while (0)

static int g_failed, g_quick, g_timing_only, g_vmax = 1 << 30;
/* cuda_sample's scratch (top-k over many blocks) for the "mb" passes; NULL:
 * the one-block kernel. */
static void *g_scr;

static void report(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%-4s %s", ok ? "ok" : "FAIL", g_scr ? "[mb] " : "");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok) g_failed = 1;
}

/* ---- host random numbers (reproducible) ---- */
static uint64_t g_rng = 0x243f6a8885a308d3ull;
static uint64_t rnd64(void) {
    uint64_t x = (g_rng += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static double rnd_unit(void) { return (double)(rnd64() >> 11) * (1.0 / 9007199254740992.0); }
static int rnd_int(int n) { return (int)(rnd64() % (uint64_t)n); }
static double rnd_normal(void) {
    double u = rnd_unit(), v = rnd_unit();
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

enum { K_GAUSS, K_GPT2, K_TIES, K_INF, K_FLAT, K_COUNT };
static const char *kind_name[K_COUNT] = {"gauss", "gpt2", "ties", "inf"};

static void gen_logits(std::vector<float> &x, int V, int kind) {
    x.resize(V);
    for (int i = 0; i < V; i++) {
        double g = rnd_normal();
        switch (kind) {
        case K_GAUSS: x[i] = (float)(2.0 * g); break;
        case K_GPT2: x[i] = (float)(-80.0 + 2.5 * g); break; /* GPT-2's raw logits sit near -80 */
        case K_TIES: x[i] = (float)(floor(g * 2.0 + 0.5) / 2.0); break;
        /* a random-weight model's: near zero, across many exponents */
        case K_FLAT: x[i] = (float)(0.5 * g); break;
        default: x[i] = rnd_unit() < 0.3 ? -INFINITY : (float)(2.0 * g); break;
        }
    }
    if (kind == K_GPT2) /* a few clear favourites, as a real next-token distribution has */
        for (int j = 0; j < 20 && V > 1; j++) x[rnd_int(V)] = (float)(-68.0 + 2.0 * rnd_normal());
    if (kind == K_INF && V > 3 && rnd_unit() < 0.25) /* nearly everything filtered */
        for (int i = 0; i < V; i++)
            if (rnd_unit() < 0.999) x[i] = -INFINITY;
}

/* ---- one step on each side ---- */
struct step_in {
    std::vector<float> logits;
    std::vector<int32_t> hist; /* before the append */
    int append;
    int32_t tok; /* the token appended (when append) */
    cuda_sampler p;
    int step;
    bool present; /* pass the present mask (else NULL) */
    bool pos;     /* pass pos (else NULL) */
};
struct step_out {
    std::vector<float> scores;
    int32_t tok;
    cuda_sample_state st;
    int32_t pos;
    int32_t ring[4]; /* cuda_sample's ring, -1 where it wrote nothing */
    std::vector<int32_t> hist;
    std::vector<uint8_t> present;
};

#define HIST_CAP 512
#define POS0 100

struct dev_bufs {
    int V;
    float *logits, *pristine;
    int32_t *hist, *token, *pos, *toks, *ring;
    uint8_t *present;
    cuda_sampler *p;
    cuda_sample_state *st;
};
static dev_bufs dev_alloc(int V, int ntoks) {
    dev_bufs d;
    d.V = V;
    CK(cudaMalloc(&d.logits, (size_t)V * sizeof(float)));
    CK(cudaMalloc(&d.pristine, (size_t)V * sizeof(float)));
    CK(cudaMalloc(&d.hist, HIST_CAP * sizeof(int32_t)));
    CK(cudaMalloc(&d.token, sizeof(int32_t)));
    CK(cudaMalloc(&d.pos, sizeof(int32_t)));
    CK(cudaMalloc(&d.ring, 4 * sizeof(int32_t)));
    CK(cudaMalloc(&d.toks, (size_t)(ntoks > 0 ? ntoks : 1) * sizeof(int32_t)));
    CK(cudaMalloc(&d.present, (size_t)V));
    CK(cudaMalloc(&d.p, sizeof(cuda_sampler)));
    CK(cudaMalloc(&d.st, sizeof(cuda_sample_state)));
    return d;
}
static void dev_free(dev_bufs &d) {
    cudaFree(d.logits), cudaFree(d.pristine), cudaFree(d.hist), cudaFree(d.token);
    cudaFree(d.pos), cudaFree(d.ring), cudaFree(d.toks), cudaFree(d.present), cudaFree(d.p), cudaFree(d.st);
}

static void gpu_step(dev_bufs &d, const step_in &in, step_out &out) {
    const int V = d.V, hn = (int)in.hist.size();
    CK(cudaMemcpy(d.logits, in.logits.data(), (size_t)V * sizeof(float), cudaMemcpyHostToDevice));
    if (hn) CK(cudaMemcpy(d.hist, in.hist.data(), hn * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d.hist + hn, 0xff, sizeof(int32_t)));
    CK(cudaMemcpy(d.p, &in.p, sizeof in.p, cudaMemcpyHostToDevice));
    cuda_sample_state st = {hn, in.step};
    CK(cudaMemcpy(d.st, &st, sizeof st, cudaMemcpyHostToDevice));
    int32_t pos = POS0;
    CK(cudaMemcpy(d.token, &in.tok, sizeof in.tok, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.pos, &pos, sizeof pos, cudaMemcpyHostToDevice));
    CK(cudaMemset(d.present, 0, (size_t)V));
    CK(cuda_mark_present(d.present, d.hist, 0, hn, 0));
    CK(cudaMemset(d.ring, 0xff, 4 * sizeof(int32_t)));
    CK(cuda_sample(d.p, d.st, d.logits, V, d.hist, in.present ? d.present : NULL, d.token,
                   in.pos ? d.pos : NULL, in.append, d.ring, 3, 0, g_scr));
    CK(cudaDeviceSynchronize());
    out.scores.resize(V);
    out.hist.resize(hn + 1);
    out.present.resize(V);
    CK(cudaMemcpy(out.scores.data(), d.logits, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&out.tok, d.token, sizeof out.tok, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&out.st, d.st, sizeof out.st, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&out.pos, d.pos, sizeof out.pos, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(out.ring, d.ring, sizeof out.ring, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(out.hist.data(), d.hist, (hn + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(out.present.data(), d.present, (size_t)V, cudaMemcpyDeviceToHost));
}

/* generate()'s loop body for one step. pre_topp (may be NULL) gets the scores
 * that top-p saw. */
static int32_t cpu_step(const step_in &in, std::vector<float> &s, std::vector<float> *pre_topp) {
    const cuda_sampler &p = in.p;
    const int V = (int)in.logits.size();
    std::vector<int32_t> seq = in.hist;
    if (in.append) seq.push_back(in.tok);
    std::vector<unsigned char> seen(V, 0);
    std::vector<scored_id> scratch(V > 0 ? V : 1);
    s = in.logits;
    if (pre_topp) pre_topp->clear();
    if (p.repetition_penalty != 1.0f)
        proc_repetition_penalty(s.data(), seq.data(), seq.size(), p.repetition_penalty, seen.data());
    if (p.no_repeat_ngram_size > 0)
        proc_no_repeat_ngram(s.data(), seq.data(), seq.size(), p.no_repeat_ngram_size);
    if (in.step < p.min_new_tokens)
        for (int e = 0; e < p.n_eos; e++) s[p.eos[e]] = -INFINITY;
    if (!p.do_sample) return sample_argmax(s.data(), V);
    if (p.temperature != 1.0f) warp_temperature(s.data(), V, p.temperature);
    if (p.top_k > 0) warp_top_k(s.data(), V, p.top_k, scratch.data());
    if (pre_topp && p.top_p < 1.0f) *pre_topp = s;
    if (p.top_p < 1.0f) warp_top_p(s.data(), V, p.top_p, scratch.data());
    return sample_categorical(s.data(), V, sample_uniform(p.seed, (uint64_t)in.step));
}

/* warp_top_p's ascending cumulative probability at token j. */
static double asc_cum_at(const std::vector<float> &s, int j) {
    std::vector<std::pair<float, int>> f;
    for (int i = 0; i < (int)s.size(); i++)
        if (s[i] > -INFINITY) f.push_back({s[i], i});
    std::sort(f.begin(), f.end(), [](const std::pair<float, int> &a, const std::pair<float, int> &b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    if (f.empty()) return -1;
    double mx = f[0].first, total = 0, cum = 0;
    for (auto &e : f) total += exp((double)e.first - mx);
    for (int i = (int)f.size() - 1; i >= 0; i--) {
        cum += exp((double)f[i].first - mx) / total;
        if (f[i].second == j) return cum;
    }
    return -1;
}

static bool same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Hard differences between device and CPU scores; top-p boundary tokens
 * (within 1e-6 of the cut) are printed and counted in *boundary instead. */
static int compare_scores(const char *tag, const std::vector<float> &gpu, const std::vector<float> &cpu,
                          const std::vector<float> *pre, float top_p, int *boundary) {
    int hard = 0;
    for (size_t i = 0; i < gpu.size(); i++) {
        if (same_bits(gpu[i], cpu[i])) continue;
        bool one_inf = (gpu[i] == -INFINITY) != (cpu[i] == -INFINITY);
        if (pre && !pre->empty() && one_inf &&
            same_bits(gpu[i] == -INFINITY ? cpu[i] : gpu[i], (*pre)[i])) {
            double cum = asc_cum_at(*pre, (int)i), cut = 1.0 - (double)top_p;
            if (fabs(cum - cut) <= 1e-6) {
                printf("     %s: top-p boundary token %zu: cum %.12f cut %.12f (gpu %g cpu %g)\n", tag,
                       i, cum, cut, (double)gpu[i], (double)cpu[i]);
                (*boundary)++;
                continue;
            }
        }
        if (hard < 5)
            printf("     %s: score %zu: gpu %.9g cpu %.9g\n", tag, i, (double)gpu[i], (double)cpu[i]);
        hard++;
    }
    return hard;
}

/* A history over [0, V) whose last ngram-1 tokens (after the append) occur
 * earlier too, so that no-repeat-ngram has something to ban. */
static void gen_history(step_in &in, int V, int n, int ngram) {
    std::vector<int32_t> h(n);
    for (int i = 0; i < n; i++) h[i] = rnd_int(V);
    int k = ngram - 1;
    if (k > 0 && n >= 2 * k + 2)
        for (int rep = 0; rep < 2; rep++) {
            int q = rnd_int(n - 2 * k - 1);
            for (int j = 0; j < k; j++) h[q + j] = h[n - k + j];
        }
    if (in.append) {
        in.tok = h.back();
        h.pop_back();
    } else {
        in.tok = rnd_int(V);
    }
    in.hist = h;
}

static cuda_sampler base_sampler(void) {
    cuda_sampler p;
    memset(&p, 0, sizeof p);
    p.repetition_penalty = 1.0f;
    p.temperature = 1.0f;
    p.top_p = 1.0f;
    p.seed = 1234;
    return p;
}

/* The state checks that hold after every step. */
static bool state_ok(const step_in &in, const step_out &out, char *why, size_t whylen) {
    int hn = (int)in.hist.size();
    if (out.st.step != in.step + 1) return snprintf(why, whylen, "step %d", out.st.step), false;
    if (out.st.hist_n != hn + (in.append ? 1 : 0)) return snprintf(why, whylen, "hist_n %d", out.st.hist_n), false;
    if (out.pos != (in.pos ? POS0 + 1 : POS0)) return snprintf(why, whylen, "pos %d", out.pos), false;
    /* the ring: the token at the new position's slot with pos, nothing without */
    for (int k = 0; k < 4; k++)
        if (out.ring[k] != (in.pos && k == ((POS0 + 1) & 3) ? out.tok : -1))
            return snprintf(why, whylen, "ring[%d] %d", k, out.ring[k]), false;
    if (in.append && (out.hist[hn] != in.tok || !out.present[in.tok]))
        return snprintf(why, whylen, "append: hist %d present %d", out.hist[hn], out.present[in.tok]), false;
    if (!in.append && out.hist[hn] != -1) return snprintf(why, whylen, "hist written without append"), false;
    return true;
}

/* ---- 1. greedy ---- */
static void test_greedy(dev_bufs &d) {
    const int V = d.V;
    const char *procs[] = {"none", "penalty", "ngram", "min_new", "all"};
    int nprocs = 5;
    for (int pi = 0; pi < nprocs; pi++) {
        if (g_quick && pi != 0 && pi != 4) continue;
        int bad = 0, cases = 0;
        char why[160] = "";
        for (int kind = 0; kind < K_COUNT; kind++) {
            if (g_quick && kind != K_GAUSS && kind != K_INF) continue;
            for (int rep = 0; rep < 2; rep++) {
                step_in in;
                in.p = base_sampler();
                in.append = rep;
                in.present = true;
                in.pos = rep == 0;
                in.step = 2 + rep;
                bool pen = pi == 1 || pi == 4, ng = pi == 2 || pi == 4, eos = pi == 3 || pi == 4;
                if (pen) in.p.repetition_penalty = rep ? 0.8f : 1.3f;
                if (ng) in.p.no_repeat_ngram_size = rep ? 2 : 3;
                if (eos) {
                    in.p.min_new_tokens = 5;
                    in.p.n_eos = 2;
                    in.p.eos[0] = V - 1, in.p.eos[1] = V / 2;
                }
                gen_logits(in.logits, V, kind);
                gen_history(in, V, 40 + rnd_int(40), ng ? in.p.no_repeat_ngram_size : 0);
                if (eos && V > 1) in.logits[V / 2] = 1e30f; /* would win unless banned */
                step_out out;
                gpu_step(d, in, out);
                std::vector<float> cs;
                int32_t ct = cpu_step(in, cs, NULL);
                cases++;
                int hard = 0;
                for (int i = 0; i < V; i++) hard += !same_bits(out.scores[i], cs[i]);
                if (out.tok != ct || hard) {
                    if (!bad)
                        snprintf(why, sizeof why, "%s rep %d: gpu id %d cpu id %d, %d scores differ",
                                 kind_name[kind], rep, out.tok, ct, hard);
                    bad++;
                } else if (!state_ok(in, out, why, sizeof why)) {
                    bad++;
                }
            }
        }
        report(!bad, "greedy    V=%-6d %-8s %d cases %s", V, procs[pi], cases, why);
    }
}

/* ---- 2./3. sampling ---- */
struct pset {
    const char *name;
    float T;
    int k; /* -1: V + 5 */
    float p;
    bool procs;
};
static const pset g_psets[] = {
    {"T0.7 k50 p0.9", 0.7f, 50, 0.9f, false},   {"p0.9", 1.0f, 0, 0.9f, false},
    {"T1.3", 1.3f, 0, 1.0f, false},             {"T0.8 k1", 0.8f, 1, 1.0f, false},
    {"k>=V p0.5", 1.0f, -1, 0.5f, false},       {"T0.5 k2000 p0.95", 0.5f, 2000, 0.95f, false},
    {"k3000 p0.8", 1.0f, 3000, 0.8f, false},    {"p0.1", 1.0f, 0, 0.1f, false},
    {"procs T0.7 k50 p0.9", 0.7f, 50, 0.9f, true}, {"T2 p0.999", 2.0f, 0, 0.999f, false},
    {"T1.1 k200 p0.95", 1.1f, 200, 0.95f, false}, {"T0.9 k1000 p0.9", 0.9f, 1000, 0.9f, false},
};
static const int g_npsets = sizeof g_psets / sizeof g_psets[0];

static long g_draws, g_draw_match, g_cpu_match;

static void test_sampling(dev_bufs &d) {
    const int V = d.V;
    const int reps = g_quick ? 1 : (V >= 50000 ? 8 : 12);
    for (int ps = 0; ps < g_npsets; ps++) {
        const pset &P = g_psets[ps];
        if (g_quick && ps != 0 && ps != 1 && ps != 4 && ps != 6 && ps != 8 && ps != 11) continue;
        int hard = 0, boundary = 0, cases = 0, filtered_pick = 0, mismatch = 0, state_bad = 0;
        char why[160] = "";
        for (int kind = 0; kind < K_COUNT; kind++) {
            if (g_quick && kind != K_GAUSS && kind != K_TIES) continue;
            for (int r = 0; r < reps; r++) {
                step_in in;
                in.p = base_sampler();
                in.p.do_sample = 1;
                in.p.temperature = P.T;
                in.p.top_k = P.k < 0 ? V + 5 : P.k;
                in.p.top_p = P.p;
                in.p.seed = 0x5eed0000u + (uint64_t)ps * 7919u + (uint64_t)kind;
                in.append = r & 1;
                in.present = true;
                in.pos = true;
                in.step = rnd_int(1000000);
                if (P.procs) {
                    in.p.repetition_penalty = 1.2f;
                    in.p.no_repeat_ngram_size = 2;
                    in.p.min_new_tokens = 3;
                    in.p.n_eos = 2;
                    in.p.eos[0] = 0, in.p.eos[1] = V - 1;
                    in.step = rnd_int(6);
                }
                gen_logits(in.logits, V, kind);
                gen_history(in, V, 20 + rnd_int(60), P.procs ? 2 : 0);
                step_out out;
                gpu_step(d, in, out);
                std::vector<float> cs, pre;
                int32_t ct = cpu_step(in, cs, &pre);
                cases++;
                char tag[96];
                snprintf(tag, sizeof tag, "V=%d %s %s r%d", V, P.name, kind_name[kind], r);
                int h = compare_scores(tag, out.scores, cs, &pre, P.p, &boundary);
                if (h && !hard) snprintf(why, sizeof why, "%s: %d scores differ", tag, h);
                hard += h;
                /* The draw against the CPU's draw on the device's own scores. */
                bool any = false;
                for (int i = 0; i < V && !any; i++) any = out.scores[i] > -INFINITY;
                int32_t want = sample_categorical(out.scores.data(), V,
                                                  sample_uniform(in.p.seed, (uint64_t)in.step));
                g_draws++;
                if (out.tok == want) g_draw_match++;
                else if (mismatch++ < 3)
                    printf("     %s: drawn %d, CPU draw on the device scores %d\n", tag, out.tok, want);
                if (out.tok == ct) g_cpu_match++;
                if (out.tok < 0 || out.tok >= V || (any && !(out.scores[out.tok] > -INFINITY))) {
                    if (!filtered_pick++)
                        printf("     %s: drew filtered token %d\n", tag, out.tok);
                }
                char sw[96];
                if (!state_ok(in, out, sw, sizeof sw)) {
                    if (!state_bad++) printf("     %s: state: %s\n", tag, sw);
                }
            }
        }
        bool ok = !hard && !filtered_pick && !state_bad;
        report(ok, "sample    V=%-6d %-20s %d cases, %d boundary, %d draws differ%s%s", V, P.name,
               cases, boundary, mismatch, filtered_pick ? ", DREW A FILTERED TOKEN" : "", why);
    }
}

/* ---- 4. statistics ---- */
static void test_stats(void) {
    const int V = 1000, N = 20000;
    dev_bufs d = dev_alloc(V, N);
    step_in in;
    in.p = base_sampler();
    in.p.do_sample = 1, in.p.temperature = 0.7f, in.p.top_k = 20, in.p.seed = 42;
    in.append = 0, in.present = false, in.pos = true, in.step = 0;
    gen_logits(in.logits, V, K_GAUSS);
    std::vector<float> cs;
    cpu_step(in, cs, NULL);
    CK(cudaMemcpy(d.pristine, in.logits.data(), V * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.p, &in.p, sizeof in.p, cudaMemcpyHostToDevice));
    cuda_sample_state st = {0, 0};
    CK(cudaMemcpy(d.st, &st, sizeof st, cudaMemcpyHostToDevice));
    for (int s = 0; s < N; s++) {
        CK(cudaMemcpyAsync(d.logits, d.pristine, V * sizeof(float), cudaMemcpyDeviceToDevice, 0));
        CK(cuda_sample(d.p, d.st, d.logits, V, d.hist, NULL, d.token, d.pos, 0, NULL, 0, 0));
        CK(cudaMemcpyAsync(d.toks + s, d.token, sizeof(int32_t), cudaMemcpyDeviceToDevice, 0));
    }
    std::vector<int32_t> toks(N);
    std::vector<float> last(V);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(toks.data(), d.toks, N * sizeof(int32_t), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(last.data(), d.logits, V * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&st, d.st, sizeof st, cudaMemcpyDeviceToHost));
    int hard = 0;
    for (int i = 0; i < V; i++) hard += !same_bits(last[i], cs[i]);
    double mx = -INFINITY, total = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, (double)cs[i]);
    std::vector<double> prob(V, 0);
    for (int i = 0; i < V; i++)
        if (cs[i] > -INFINITY) prob[i] = exp((double)cs[i] - mx), total += prob[i];
    std::vector<long> cnt(V, 0);
    int exact = 0, outside = 0;
    for (int s = 0; s < N; s++) {
        int t = toks[s];
        if (t < 0 || t >= V || prob[t] == 0) {
            outside++;
            continue;
        }
        cnt[t]++;
        exact += t == sample_categorical(cs.data(), V, sample_uniform(in.p.seed, (uint64_t)s));
    }
    double chi2 = 0, worst = 0;
    int df = -1;
    for (int i = 0; i < V; i++) {
        if (prob[i] == 0) continue;
        double pi = prob[i] / total, e = N * pi;
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
        worst = fmax(worst, fabs(cnt[i] - e) / sqrt(e * (1 - pi)));
        df++;
    }
    /* Wilson-Hilferty: the chi-square's z-score. */
    double z = (pow(chi2 / df, 1.0 / 3) - (1 - 2.0 / (9 * df))) / sqrt(2.0 / (9 * df));
    g_draws += N, g_draw_match += exact, g_cpu_match += exact;
    bool ok = !hard && !outside && st.step == N && z < 5 && worst < 5;
    report(ok,
           "stats     V=%d T0.7 k20, %d draws: chi2 %.1f df %d (z %.2f), worst token %.2f sigma, "
           "%d/%d equal to the CPU draw, %d outside top-k, step %d",
           V, N, chi2, df, z, worst, exact, N, outside, st.step);
    dev_free(d);
}

/* ---- 5. determinism ---- */
static void test_determinism(dev_bufs &d, int ps) {
    const int V = d.V;
    step_in in;
    in.p = base_sampler();
    in.p.do_sample = 1, in.p.temperature = g_psets[ps].T;
    in.p.top_k = g_psets[ps].k, in.p.top_p = g_psets[ps].p;
    in.append = 1, in.present = true, in.pos = true, in.step = 77;
    in.p.repetition_penalty = 1.1f;
    gen_logits(in.logits, V, K_GPT2);
    gen_history(in, V, 50, 0);
    step_out a, b, c;
    gpu_step(d, in, a);
    gpu_step(d, in, b);
    step_in other = in;
    other.step = 78;
    gpu_step(d, other, c);
    gpu_step(d, in, c);
    bool ok = a.tok == b.tok && a.tok == c.tok &&
              !memcmp(a.scores.data(), b.scores.data(), V * sizeof(float)) &&
              !memcmp(a.scores.data(), c.scores.data(), V * sizeof(float)) &&
              a.st.step == b.st.step && a.st.hist_n == b.st.hist_n;
    report(ok, "determ.   V=%-6d %-20s three runs: ids %d %d %d", V, g_psets[ps].name, a.tok, b.tok, c.tok);
}

/* ---- 6. state and cuda_mark_present ---- */
static void test_state(void) {
    const int V = 1000;
    dev_bufs d = dev_alloc(V, 1);
    step_in in;
    in.p = base_sampler();
    in.logits.assign(V, 0.0f);
    in.logits[500] = 5.0f;
    in.hist = {1, 2, 3, 4, 5};
    in.append = 1, in.tok = 42, in.present = true, in.pos = true, in.step = 7;
    step_out out;
    gpu_step(d, in, out);
    bool ok = out.tok == 500 && out.st.step == 8 && out.st.hist_n == 6 && out.hist[5] == 42 &&
              out.present[42] && out.pos == POS0 + 1;
    for (int i = 0; i < V; i++) ok = ok && out.present[i] == (i == 42 || (i >= 1 && i <= 5));
    report(ok, "state     append: id %d step %d hist_n %d hist[5] %d present[42] %d pos %d", out.tok,
           out.st.step, out.st.hist_n, out.hist[5], out.present[42], out.pos);
    in.append = 0, in.pos = false;
    gpu_step(d, in, out);
    ok = out.st.step == 8 && out.st.hist_n == 5 && out.hist[5] == -1 && !out.present[42] &&
         out.pos == POS0;
    report(ok, "state     no append, pos NULL: step %d hist_n %d pos %d", out.st.step, out.st.hist_n, out.pos);

    /* cuda_mark_present in two ranges and an empty one. */
    std::vector<int32_t> h(300);
    for (auto &t : h) t = rnd_int(V);
    CK(cudaMemcpy(d.hist, h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d.present, 0, V));
    CK(cuda_mark_present(d.present, d.hist, 0, 100, 0));
    CK(cuda_mark_present(d.present, d.hist, 100, 300, 0));
    CK(cuda_mark_present(d.present, d.hist, 300, 300, 0));
    std::vector<uint8_t> got(V), want(V, 0);
    for (auto t : h) want[t] = 1;
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got.data(), d.present, V, cudaMemcpyDeviceToHost));
    report(got == want, "present   cuda_mark_present over [0,100) + [100,300) + [300,300)");
    dev_free(d);
}

/* ---- timing ---- */
__global__ void restore_kernel(float *dst, const float *src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}

/* Microseconds per step: (restore + step) minus restore alone, each as a
 * CUDA graph of `iters` repetitions so that host launch costs stay out (a
 * plain stream loop if capture fails). */
static double time_step(dev_bufs &d, const cuda_sampler &p, bool present, int iters, bool *graph) {
    const int V = d.V;
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(d.p, &p, sizeof p, cudaMemcpyHostToDevice));
    float ms[2];
    *graph = true;
    for (int with = 0; with < 2; with++) {
        auto enqueue = [&]() {
            cudaError_t e = cudaSuccess;
            for (int i = 0; i < iters && e == cudaSuccess; i++) {
                restore_kernel<<<128, 256, 0, st>>>(d.logits, d.pristine, V);
                e = cudaGetLastError();
                if (with && e == cudaSuccess)
                    e = cuda_sample(d.p, d.st, d.logits, V, d.hist, present ? d.present : NULL,
                                    d.token, d.pos, 0, NULL, 0, st, g_scr);
            }
            return e;
        };
        cudaGraph_t g = NULL;
        cudaGraphExec_t ge = NULL;
        bool ok = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        cudaError_t qe = ok ? enqueue() : cudaErrorUnknown;
        ok = cudaStreamEndCapture(st, &g) == cudaSuccess && ok && qe == cudaSuccess &&
             cudaGraphInstantiate(&ge, g, 0) == cudaSuccess;
        if (!ok) {
            (void)cudaGetLastError();
            *graph = false;
        }
        for (int run = 0; run < 2; run++) { /* a warm-up, then the timed run */
            if (run) CK(cudaEventRecord(e0, st));
            if (ok) CK(cudaGraphLaunch(ge, st));
            else CK(enqueue());
            if (run) CK(cudaEventRecord(e1, st));
        }
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms[with], e0, e1));
        if (ge) CK(cudaGraphExecDestroy(ge));
        if (g) CK(cudaGraphDestroy(g));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaStreamDestroy(st));
    return (ms[1] - ms[0]) * 1000.0 / iters;
}

/* The stages of one step (thread 0's clocks): built with -DGPTC_SAMPLE_PROFILE
 * only; the parameters are those time_step left in d.p. */
static void print_stages(dev_bufs &d, int V) {
#ifdef GPTC_SAMPLE_PROFILE
    int khz = 0;
    long long st[16];
    CK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0));
    CK(cudaMemcpy(d.logits, d.pristine, V * sizeof(float), cudaMemcpyDeviceToDevice));
    CK(cuda_sample(d.p, d.st, d.logits, V, d.hist, d.present, d.token, d.pos, 0, NULL, 0, 0, g_scr));
    CK(cudaDeviceSynchronize());
    cuda_sample_profile(st);
    printf("     stages (us at %d MHz):", khz / 1000);
    long long prev = st[0];
    for (int k = 1; k < 16; k++)
        if (st[k]) printf(" %d:%.2f", k, (st[k] - prev) * 1000.0 / khz), prev = st[k];
    printf("\n");
#else
    (void)d, (void)V;
#endif
}

static void test_timing(void) {
    const int V = 50257, iters = 500;
    dev_bufs d = dev_alloc(V, 1);
    std::vector<float> x;
    gen_logits(x, V, K_GPT2);
    CK(cudaMemcpy(d.pristine, x.data(), V * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<int32_t> h(200);
    for (auto &t : h) t = rnd_int(V);
    CK(cudaMemcpy(d.hist, h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemset(d.present, 0, V));
    CK(cuda_mark_present(d.present, d.hist, 0, (int)h.size(), 0));
    cuda_sample_state s0 = {(int)h.size(), 0};
    CK(cudaMemcpy(d.st, &s0, sizeof s0, cudaMemcpyHostToDevice));
    /* Once outside the capture: the launcher sets the kernel's shared memory limit. */
    cuda_sampler p = base_sampler();
    CK(cudaMemcpy(d.p, &p, sizeof p, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.logits, d.pristine, V * sizeof(float), cudaMemcpyDeviceToDevice));
    CK(cuda_sample(d.p, d.st, d.logits, V, d.hist, d.present, d.token, d.pos, 0, NULL, 0, 0, g_scr));
    CK(cudaDeviceSynchronize());

    struct {
        const char *name;
        int do_sample;
        float T, pen, top_p;
        int k;
        double goal;
    } cfg[] = {
        {"sample T0.7 k50 p0.9", 1, 0.7f, 1.0f, 0.9f, 50, 20},
        {"sample T0.7 k50 p0.9 penalty 1.2", 1, 0.7f, 1.2f, 0.9f, 50, 20},
        {"greedy penalty 1.2", 0, 1.0f, 1.2f, 1.0f, 0, 8},
        {"greedy", 0, 1.0f, 1.0f, 1.0f, 0, 8},
        {"sample p0.9 (no top-k)", 1, 1.0f, 1.0f, 0.9f, 0, 0},
        {"sample T1 (no top-k, no top-p)", 1, 1.0f, 1.0f, 1.0f, 0, 0},
    };
    for (auto &c : cfg) {
        p = base_sampler();
        p.do_sample = c.do_sample, p.temperature = c.T, p.repetition_penalty = c.pen;
        p.top_p = c.top_p, p.top_k = c.k;
        bool graph;
        double us = time_step(d, p, true, iters, &graph);
        printf("time %-4s V=%d %-34s %7.2f us/step", g_scr ? "mb" : "", V, c.name, us);
        if (c.goal > 0) printf(" (goal <= %.0f us)%s", c.goal, us > c.goal ? "  OVER GOAL" : "");
        printf("%s\n", graph ? "" : " [stream loop: graph capture failed]");
        print_stages(d, V);
    }
    /* A random-weight model's logits (near zero, across many exponents),
     * whose keys top-p's radix once piled into a few buckets. */
    gen_logits(x, V, K_FLAT);
    CK(cudaMemcpy(d.pristine, x.data(), V * sizeof(float), cudaMemcpyHostToDevice));
    const struct {
        const char *name;
        float T, top_p;
        int k;
    } flat[] = {{"flat: sample p0.9 (no top-k)", 1.0f, 0.9f, 0}, {"flat: sample T0.7 k50 p0.9", 0.7f, 0.9f, 50}};
    for (auto &c : flat) {
        p = base_sampler();
        p.do_sample = 1, p.temperature = c.T, p.top_p = c.top_p, p.top_k = c.k;
        bool graph;
        double us = time_step(d, p, true, iters, &graph);
        printf("time %-4s V=%d %-34s %7.2f us/step%s\n", g_scr ? "mb" : "", V, c.name, us,
               graph ? "" : " [stream loop: graph capture failed]");
        print_stages(d, V);
    }
    fflush(stdout);
    dev_free(d);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) g_quick = 1;
        else if (!strcmp(argv[i], "--timing")) g_timing_only = 1;
        else if (!strcmp(argv[i], "--vmax") && i + 1 < argc) g_vmax = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick | --timing] [--vmax V]\n", argv[0]);
            return 2;
        }
    }
    int dev = 0, optin = 0;
    cudaDeviceProp prop;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&prop, dev));
    CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    printf("device %s, %d bytes of shared memory a block (opt-in)%s\n", prop.name, optin,
           g_quick ? ", quick" : "");

    const int Vs[] = {1, 7, 1000, 50257, 100003};
    void *scr = NULL;
    CK(cudaMalloc(&scr, cuda_sample_scratch_bytes(100003)));
    CK(cudaMemset(scr, 0, cuda_sample_scratch_bytes(100003)));
    if (g_timing_only) {
        for (int mb = 0; mb < 2; mb++) g_scr = mb ? scr : NULL, test_timing();
        return g_failed;
    }
    /* The one-block kernel, then with the scratch (top-k over many blocks,
     * everything else still the one-block path, from another kernel). */
    for (int mb = 0; mb < 2; mb++) {
        g_scr = mb ? scr : NULL;
        for (int V : Vs) {
            if (V > g_vmax) continue;
            dev_bufs d = dev_alloc(V, 1);
            test_greedy(d);
            test_sampling(d);
            if (V >= 50000) {
                test_determinism(d, 0);
                if (!g_quick) test_determinism(d, 1);
            }
            dev_free(d);
        }
    }
    g_scr = NULL;
    test_state();
    if (!g_quick) test_stats();
    double rate = g_draws ? (double)g_draw_match / g_draws : 1;
    bool enough = g_quick || g_draws >= 2000;
    report(enough && rate >= 0.999,
           "draws     %ld draws: %.4f%% equal to the CPU draw on the device scores, %.4f%% to the "
           "CPU pipeline's draw",
           g_draws, 100 * rate, g_draws ? 100.0 * g_cpu_match / g_draws : 100.0);
    if (!g_quick)
        for (int mb = 0; mb < 2; mb++) g_scr = mb ? scr : NULL, test_timing();
    CK(cudaFree(scr));
    printf("%s\n", g_failed ? "FAILED" : "all ok");
    return g_failed ? 1 : 0;
}
