/*
 * serve_metrics.h - the server's counters and latency histograms, rendered
 * in Prometheus' text format for GET /metrics. Every function is safe to call
 * from any thread.
 */
#ifndef GPTC_SERVE_METRICS_H
#define GPTC_SERVE_METRICS_H

#include <stddef.h>

#include "serve_buf.h"

typedef struct serve_metrics serve_metrics;

/* The gauges, as the engine last saw them. */
typedef struct {
    size_t queued;                         /* sequences waiting to start */
    size_t running;                        /* sequences in the running batch */
    size_t kv_used, kv_reserved, kv_total; /* K/V cache positions */
    size_t max_batch;
    int ready; /* the model is loaded */
} serve_gauges;

serve_metrics *serve_metrics_new(void);
void serve_metrics_free(serve_metrics *m);

/* One HTTP response: its endpoint ("/v1/completions", ...; anything else is
 * counted as "other") and status. */
void serve_metrics_request(serve_metrics *m, const char *endpoint, int status);
void serve_metrics_prompt_tokens(serve_metrics *m, size_t n);
void serve_metrics_generated_token(serve_metrics *m);
void serve_metrics_ttft(serve_metrics *m, double seconds);
void serve_metrics_itl(serve_metrics *m, double seconds);
void serve_metrics_e2e(serve_metrics *m, double seconds);

/* Appends the whole exposition to out. */
void serve_metrics_render(serve_metrics *m, const serve_gauges *g, serve_buf *out);

#endif
