/*
 * serve_http.h - the HTTP side of `gptc serve`: libmicrohttpd, one thread per
 * connection, the OpenAI routes, and draining on shutdown.
 */
#ifndef GPTC_SERVE_HTTP_H
#define GPTC_SERVE_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "serve_engine.h"
#include "serve_metrics.h"
#include "serve_request.h"

typedef struct serve_http serve_http;

typedef struct {
    const struct sockaddr *addr; /* where to listen */
    socklen_t addr_len;
    const char *model_name; /* what /v1/models lists and "model" must be */
    const char *api_key;    /* NULL: no authentication */
    size_t max_body;        /* bytes; more is 413 */
    double request_timeout; /* seconds; 0: none */
    unsigned max_connections;
    serve_metrics *metrics;
} serve_http_config;

/* Listens and answers (503 on /v1/completions and /health until
 * serve_http_ready). The strings in cfg must outlive the server. Returns NULL
 * after printing why. */
serve_http *serve_http_start(const serve_http_config *cfg);
/* The port it listens on (useful with port 0). */
unsigned serve_http_port(const serve_http *h);
/* The model is loaded: completions go to `engine` from now on. */
void serve_http_ready(serve_http *h, serve_engine *engine, const serve_limits *limits);
/* Stops accepting connections; new requests on open connections get 503
 * (and the connection closes). Requests in progress go on. */
void serve_http_quiesce(serve_http *h);
/* Waits up to `seconds` for the requests in progress to end; how many have
 * not. */
size_t serve_http_wait_idle(serve_http *h, double seconds);
/* Closes every connection and frees the server (no request may be in
 * progress in the engine's view afterwards). */
void serve_http_stop(serve_http *h);

#endif
