/*
 * serve_metrics.c - counters and histograms for GET /metrics (Prometheus
 * text exposition format 0.0.4). Names follow Prometheus' conventions: a
 * _total suffix on counters, base units (seconds), one histogram per latency.
 */
#include "serve_metrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_endpoints[] = {"/v1/completions", "/v1/models", "/health", "/metrics",
                                          "other"};
#define N_ENDPOINTS (sizeof k_endpoints / sizeof k_endpoints[0])
/* Statuses counted one by one; the rest of each class is pooled into "4xx" / "5xx". */
static const int k_statuses[] = {200, 400, 401, 404, 405, 413, 429, 500, 503, 504};
#define N_STATUSES (sizeof k_statuses / sizeof k_statuses[0])

/* Latency buckets in seconds: a CPU decode step is ~1-100 ms, a GPU one
 * ~0.2-5 ms, and a first token waits for a whole prompt or a queue. */
static const double k_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
#define N_BUCKETS (sizeof k_buckets / sizeof k_buckets[0])

typedef struct {
    uint64_t counts[N_BUCKETS + 1]; /* the last one: above every bound */
    double sum;
    uint64_t n;
} histogram;

struct serve_metrics {
    pthread_mutex_t mu;
    uint64_t requests[N_ENDPOINTS][N_STATUSES + 2]; /* + other 4xx, other 5xx */
    uint64_t prompt_tokens, generated_tokens;
    histogram ttft, itl, e2e;
};

serve_metrics *serve_metrics_new(void) {
    serve_metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void serve_metrics_free(serve_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void serve_metrics_request(serve_metrics *m, const char *endpoint, int status) {
    size_t e = 0;
    while (e < N_ENDPOINTS - 1 && strcmp(endpoint, k_endpoints[e]))
        e++;
    size_t s = 0;
    while (s < N_STATUSES && k_statuses[s] != status)
        s++;
    if (s == N_STATUSES && status >= 500) s++;
    pthread_mutex_lock(&m->mu);
    m->requests[e][s]++;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_prompt_tokens(serve_metrics *m, size_t n) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += n;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_generated_token(serve_metrics *m) {
    pthread_mutex_lock(&m->mu);
    m->generated_tokens++;
    pthread_mutex_unlock(&m->mu);
}

static void observe(serve_metrics *m, histogram *h, double v) {
    size_t b = 0;
    while (b < N_BUCKETS && v > k_buckets[b])
        b++;
    pthread_mutex_lock(&m->mu);
    h->counts[b]++;
    h->sum += v;
    h->n++;
    pthread_mutex_unlock(&m->mu);
}

void serve_metrics_ttft(serve_metrics *m, double s) { observe(m, &m->ttft, s); }
void serve_metrics_itl(serve_metrics *m, double s) { observe(m, &m->itl, s); }
void serve_metrics_e2e(serve_metrics *m, double s) { observe(m, &m->e2e, s); }

static void render_histogram(serve_buf *o, const char *name, const char *help, const histogram *h) {
    serve_buf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        cum += h->counts[b];
        serve_buf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, k_buckets[b],
                         (unsigned long long)cum);
    }
    serve_buf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n", name,
                     (unsigned long long)h->n, name, h->sum, name, (unsigned long long)h->n);
}

static void gauge(serve_buf *o, const char *name, const char *help, double v) {
    serve_buf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

void serve_metrics_render(serve_metrics *m, const serve_gauges *g, serve_buf *o) {
    pthread_mutex_lock(&m->mu);
    serve_buf_str(o, "# HELP gptc_requests_total HTTP responses, by endpoint and status code.\n"
                     "# TYPE gptc_requests_total counter\n");
    for (size_t e = 0; e < N_ENDPOINTS; e++)
        for (size_t s = 0; s < N_STATUSES + 2; s++) {
            if (!m->requests[e][s]) continue;
            char code[8];
            if (s < N_STATUSES)
                snprintf(code, sizeof code, "%d", k_statuses[s]);
            else
                snprintf(code, sizeof code, "%s", s == N_STATUSES ? "4xx" : "5xx");
            serve_buf_printf(o, "gptc_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
                             k_endpoints[e], code, (unsigned long long)m->requests[e][s]);
        }
    serve_buf_printf(
        o,
        "# HELP gptc_prompt_tokens_total Prompt tokens processed (a prompt counts once per "
        "choice, n).\n# TYPE gptc_prompt_tokens_total counter\ngptc_prompt_tokens_total %llu\n"
        "# HELP gptc_generation_tokens_total Tokens generated.\n"
        "# TYPE gptc_generation_tokens_total counter\ngptc_generation_tokens_total %llu\n",
        (unsigned long long)m->prompt_tokens, (unsigned long long)m->generated_tokens);
    render_histogram(o, "gptc_time_to_first_token_seconds",
                     "From the request's arrival to its first generated token.", &m->ttft);
    render_histogram(o, "gptc_inter_token_latency_seconds", "Between two tokens of one sequence.",
                     &m->itl);
    render_histogram(o, "gptc_request_duration_seconds",
                     "From a completion request's arrival to its last token.", &m->e2e);
    pthread_mutex_unlock(&m->mu);
    gauge(o, "gptc_model_loaded", "1 once the model is loaded and requests are served.", g->ready);
    gauge(o, "gptc_queue_length", "Sequences waiting to join the running batch.",
          (double)g->queued);
    gauge(o, "gptc_running_batch_size", "Sequences in the running batch.", (double)g->running);
    gauge(o, "gptc_max_batch_size", "Sequences the batch decodes together at most (--max-batch).",
          (double)g->max_batch);
    gauge(o, "gptc_kv_cache_positions_used", "K/V cache positions held by running sequences.",
          (double)g->kv_used);
    gauge(o, "gptc_kv_cache_positions_reserved",
          "K/V cache positions reserved by running sequences (prompt + max_tokens each).",
          (double)g->kv_reserved);
    gauge(o, "gptc_kv_cache_positions_total", "K/V cache positions in all (--kv-memory).",
          (double)g->kv_total);
    gauge(o, "gptc_kv_cache_usage_ratio", "Used over total K/V cache positions.",
          g->kv_total ? (double)g->kv_used / (double)g->kv_total : 0.0);
}
