/*
 * serve.c - `gptc serve`: flags, start-up and shutdown of the OpenAI-compatible
 * HTTP server. The parts: serve_http.c (HTTP, routes, streams),
 * serve_request.c (request checks), serve_engine.c (the thread that owns the
 * batch), serve_metrics.c (/metrics).
 *
 * Start-up: the server listens first and loads the model on a thread of its
 * own, so that /health can say "loading" (503) until the model is there.
 * Signals are taken by the main thread alone (blocked in every other):
 * SIGTERM or SIGINT stop accepting connections and let every request in
 * progress finish, then the process exits 0; a second one cancels what is
 * left.
 */
#include "serve.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "serve_engine.h"
#include "serve_http.h"
#include "serve_metrics.h"
#include "serve_request.h"

static const char *k_serve_help =
    "usage: gptc serve -m MODEL [--host 127.0.0.1] [--port 8080] [options]\n"
    "\n"
    "Serves the model over HTTP with OpenAI's API: POST /v1/completions (streaming\n"
    "with \"stream\": true), GET /v1/models, /health (200 once the model is loaded)\n"
    "and /metrics (Prometheus). Requests are batched continuously: a new request\n"
    "joins the running batch at the next decode step. SIGTERM or Ctrl-C stop\n"
    "accepting connections and finish the requests in progress (a second one\n"
    "cancels them).\n"
    "\n"
    "  -m, --model MODEL           checkpoint folder, or Hugging Face Hub model id (gpt2,\n"
    "                              org/name), as gptc generate takes it; default: the demo\n"
    "                              model that comes with gptc (models/shakespeare-demo)\n"
    "  --revision REV              Hub branch, tag or commit hash (default main)\n"
    "  --backend cpu|cuda|auto     where to run (default auto: cuda when a GPU is usable)\n"
    "  --dtype f16|bf16|f32        weights on the GPU (default f16)\n"
    "  --devices 0,1,...           (CUDA) an engine per GPU, each with the whole model and\n"
    "                              its own --max-batch; a request goes to the least busy\n"
    "                              (default: one engine on --device, 0)\n"
    "  --threads N                 CPU threads (default: all cores)\n"
    "  --host HOST                 address to listen on (default 127.0.0.1: this machine\n"
    "                              only; 0.0.0.0 or :: for every interface)\n"
    "  --port PORT                 default 8080; 0: any free port (printed)\n"
    "  --served-model-name NAME    the model's name in the API (default: -m as given)\n"
    "  --max-batch N               sequences decoded together (default 32)\n"
    "  --fast-decode               (CUDA) decode steps through tensor-core products:\n"
    "                              faster at large batches, but a greedy result may then\n"
    "                              depend on the other requests where two tokens nearly tie\n"
    "  --max-queue N               sequences that may wait beyond those; more get 429\n"
    "                              (default 256)\n"
    "  --kv-memory SIZE            K/V cache size, e.g. 2GiB (default: max-batch full-\n"
    "                              length sequences)\n"
    "  --api-key KEY               require 'Authorization: Bearer KEY' on /v1/ (also from\n"
    "                              $GPTC_API_KEY, which keeps it out of the process list)\n"
    "  --max-body SIZE             largest request body (default 1MiB; larger: 413)\n"
    "  --request-timeout SECONDS   a request still running after this is cancelled with\n"
    "                              an error (default 600; 0: never)\n"
    "  --max-connections N         open connections at most (default 1024)\n";

#define MAX_DEVICES 64

typedef struct {
    const serve_cli *cli;
    const char *model_name;
    gptc_batch_params bp;
    size_t max_waiting;
    serve_metrics *metrics;
    serve_http *http;
    pthread_t main_thread;
    const int *devices; /* NULL: the CLI's --device */
    size_t n_devices;
    /* results */
    int rc; /* 0, or the exit status after printing why */
    gptc_model *m[MAX_DEVICES];
    size_t n_m;
    gptc_tokenizer *tok;
    serve_engine *engine;
} loader;

static void err_line(const char *msg, const char *detail) {
    fprintf(stderr, "gptc serve: %s%s\n", msg, detail ? detail : "");
}

/* Loads the model, its tokenizer and the engine, then tells the main thread
 * (SIGUSR1) either way. */
static void *load_main(void *arg) {
    loader *L = arg;
    const char *dir = NULL;
    for (size_t i = 0; i < (L->devices ? L->n_devices : 1) && !L->rc; i++) {
        L->rc = L->cli->load_model(L->cli->opts, L->devices ? L->devices[i] : -1, &L->m[i], &dir);
        if (!L->rc) L->n_m++;
    }
    if (!L->rc && gptc_tokenizer_load(dir, &L->tok) != GPTC_OK) {
        err_line(gptc_last_error(), NULL);
        L->rc = 1;
    }
    if (!L->rc &&
        serve_engine_new(L->m, L->n_m, L->tok, &L->bp, L->max_waiting, L->metrics, &L->engine) != GPTC_OK) {
        err_line(gptc_last_error()[0] ? gptc_last_error() : "cannot start the engine", NULL);
        L->rc = strstr(gptc_last_error(), "kv_memory") || strstr(gptc_last_error(), "max_batch")
                    ? 2
                    : 1;
    }
    if (!L->rc) {
        const gptc_config *c = gptc_model_config(L->m[0]);
        serve_limits lim = {.model_name = L->model_name,
                            .tok = L->tok,
                            .n_vocab = c->n_vocab,
                            .n_ctx = c->n_ctx,
                            .defaults = gptc_generate_default_params(L->m[0]),
                            .max_sequences = serve_engine_max_sequences(L->engine)};
        serve_http_ready(L->http, L->engine, &lim);
        serve_gauges g;
        serve_engine_gauges(L->engine, &g);
        char where[64] = "";
        if (L->devices) {
            int k = snprintf(where, sizeof where, " (devices");
            for (size_t i = 0; i < L->n_devices && k > 0 && (size_t)k < sizeof where; i++)
                k += snprintf(where + k, sizeof where - (size_t)k, "%s%d", i ? "," : " ", L->devices[i]);
            if (k > 0 && (size_t)k < sizeof where) snprintf(where + k, sizeof where - (size_t)k, ")");
        }
        fprintf(stderr,
                "gptc serve: ready: %s on %s%s, %d threads, max batch %zu, K/V cache %zu positions\n",
                L->model_name, gptc_model_backend(L->m[0]), where, gptc_model_n_threads(L->m[0]),
                g.max_batch, g.kv_total);
    }
    pthread_kill(L->main_thread, SIGUSR1);
    return NULL;
}

/* HOST and PORT as a socket address; 0 after printing why. */
static int resolve_addr(const char *host, long port, struct sockaddr_storage *out, socklen_t *len) {
    char ps[16];
    snprintf(ps, sizeof ps, "%ld", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host, ps, &hints, &res);
    if (r != 0 || !res) {
        fprintf(stderr, "gptc serve: --host: cannot resolve '%s': %s\n", host, gai_strerror(r));
        return 0;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 1;
}

static int usage(const char *flag, const char *what) {
    fprintf(stderr, "gptc serve: %s: %s (see gptc serve --help)\n", flag, what);
    return 2;
}

/* "0,1,3": device ordinals, an engine each (a device named twice gets two);
 * 0 after printing why. */
static int parse_devices(const char *v, int *out, size_t *n) {
    *n = 0;
    for (const char *p = v;;) {
        char *end;
        errno = 0;
        long d = strtol(p, &end, 10);
        if (end == p || errno || d < 0 || d > 1023 || (*end && *end != ','))
            return usage("--devices", "expected GPU numbers separated by commas, such as 0,1"), 0;
        if (*n == MAX_DEVICES) return usage("--devices", "more than 64 GPUs"), 0;
        out[(*n)++] = (int)d;
        if (!*end) return 1;
        p = end + 1;
    }
}

int serve_main(int argc, char **argv, const serve_cli *cli) {
    const char *host = "127.0.0.1", *model_arg = NULL, *name = NULL,
               *api_key = getenv("GPTC_API_KEY");
    long port = 8080, max_batch = 0, max_queue = 256, max_conn = 1024;
    int fast_decode = 0, devices[MAX_DEVICES];
    size_t n_devices = 0;
    double timeout = 600;
    unsigned long long kv_memory = 0, max_body = 1 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(k_serve_help, stdout);
            return 0;
        }
        if ((strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) && i + 1 < argc)
            model_arg = argv[i + 1];
        int r = cli->model_flag(cli->opts, argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        if (strcmp(a, "--fast-decode") == 0) {
            fast_decode = 1;
            continue;
        }
        if (i + 1 >= argc) return usage(a, "unknown flag or missing value");
        const char *v = argv[++i];
        if (strcmp(a, "--host") == 0)
            host = v;
        else if (strcmp(a, "--port") == 0) {
            if (!cli->parse_long(a, v, 0, 65535, &port)) return 2;
        } else if (strcmp(a, "--served-model-name") == 0) {
            if (!*v) return usage(a, "empty name");
            name = v;
        } else if (strcmp(a, "--max-batch") == 0) {
            if (!cli->parse_long(a, v, 1, 65536, &max_batch)) return 2;
        } else if (strcmp(a, "--max-queue") == 0) {
            if (!cli->parse_long(a, v, 0, 1 << 20, &max_queue)) return 2;
        } else if (strcmp(a, "--max-connections") == 0) {
            if (!cli->parse_long(a, v, 1, 1 << 16, &max_conn)) return 2;
        } else if (strcmp(a, "--kv-memory") == 0) {
            if (!cli->parse_size(a, v, &kv_memory)) return 2;
        } else if (strcmp(a, "--max-body") == 0) {
            if (!cli->parse_size(a, v, &max_body)) return 2;
        } else if (strcmp(a, "--api-key") == 0) {
            if (!*v) return usage(a, "empty key");
            api_key = v;
        } else if (strcmp(a, "--devices") == 0) {
            if (!parse_devices(v, devices, &n_devices)) return 2;
        } else if (strcmp(a, "--request-timeout") == 0) {
            char *end;
            errno = 0;
            timeout = strtod(v, &end);
            if (!*v || *end || errno || !(timeout >= 0 && timeout <= 1e9))
                return usage(a, "not a number of seconds >= 0");
        } else
            return usage(a, "unknown flag");
    }
    if (api_key && !*api_key) api_key = NULL;
    if (!name) name = model_arg ? model_arg : "shakespeare-demo";

    struct sockaddr_storage addr;
    socklen_t addr_len = 0;
    if (!resolve_addr(host, port, &addr, &addr_len)) return 2;

    /* Every thread started from here on inherits the blocked signals; the
     * main thread takes them with sigwait. SIGPIPE: a client gone mid-write
     * is an error to handle, not a reason to die. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    serve_metrics *metrics = serve_metrics_new();
    if (!metrics) return err_line("out of memory", NULL), 1;
    serve_http_config hc = {.addr = (const struct sockaddr *)&addr,
                            .addr_len = addr_len,
                            .model_name = name,
                            .api_key = api_key,
                            .max_body = (size_t)max_body,
                            .request_timeout = timeout,
                            .max_connections = (unsigned)max_conn,
                            .metrics = metrics};
    serve_http *http = serve_http_start(&hc);
    if (!http) {
        fprintf(stderr, "gptc serve: cannot listen on %s port %ld: %s\n", host, port,
                errno ? strerror(errno) : "libmicrohttpd failed to start");
        serve_metrics_free(metrics);
        return 1;
    }
    int v6 = addr.ss_family == AF_INET6;
    fprintf(stderr, "gptc serve: listening on http://%s%s%s:%u/v1 (model %s loading)\n",
            v6 ? "[" : "", host, v6 ? "]" : "", serve_http_port(http), name);

    loader L = {.cli = cli,
                .model_name = name,
                .max_waiting = (size_t)max_queue,
                .metrics = metrics,
                .http = http,
                .main_thread = pthread_self()};
    if (n_devices) L.devices = devices, L.n_devices = n_devices;
    L.bp = gptc_batch_default_params();
    if (max_batch) L.bp.max_batch = (int32_t)max_batch;
    L.bp.kv_memory = kv_memory;
    L.bp.fast_decode = fast_decode;
    pthread_t lt;
    if (pthread_create(&lt, NULL, load_main, &L) != 0) {
        serve_http_stop(http);
        serve_metrics_free(metrics);
        return err_line("cannot start a thread", NULL), 1;
    }
    int loaded = 0, rc = 0, sig = 0;
    for (;;) {
        sigwait(&set, &sig);
        if (sig == SIGUSR1) {
            pthread_join(lt, NULL);
            loaded = 1;
            rc = L.rc;
            if (rc) break;
            continue;
        }
        break; /* SIGTERM, SIGINT */
    }
    if (!loaded) {
        /* Loading cannot be interrupted: leave without waiting for it. */
        err_line("stopped before the model was loaded", NULL);
        serve_http_stop(http);
        _exit(0);
    }
    if (!rc) {
        serve_http_quiesce(http);
        err_line("stopping: finishing the requests in progress (signal again to cancel them)",
                 NULL);
        const struct timespec tick = {0, 100 * 1000 * 1000};
        while (serve_http_wait_idle(http, 0) > 0) {
            int s = sigtimedwait(&set, NULL, &tick);
            if (s == SIGTERM || s == SIGINT) {
                err_line("cancelling the requests in progress", NULL);
                break;
            }
        }
    }
    /* Closes the connections (after a second signal, requests still running
     * are cut off), then the engine, then the model. */
    serve_http_stop(http);
    serve_engine_free(L.engine);
    gptc_tokenizer_free(L.tok);
    for (size_t i = 0; i < L.n_m; i++)
        gptc_model_free(L.m[i]);
    serve_metrics_free(metrics);
    if (!rc) err_line("stopped", NULL);
    return rc;
}
