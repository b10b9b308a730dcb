/*
 * serve_http.c - the HTTP side of `gptc serve` (see serve_http.h).
 *
 * libmicrohttpd runs one thread per connection. That lets a handler simply
 * block: a completion request waits on its job's condition variable, and a
 * stream's content callback blocks until its next tokens are there. A
 * connection limit bounds the threads; a slow client holds only its own.
 * While it waits, a thread watches its socket (serve_job_wait), so a client
 * that goes away has its request cancelled and its K/V cache freed at once.
 *
 * Routes: POST /v1/completions; GET /v1/models, /v1/models/NAME, /health,
 * /metrics. --api-key guards /v1/ only: load balancers and Prometheus read
 * /health and /metrics without it.
 */
#include "serve_http.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "serve_buf.h"

/* Idle seconds after which a connection is closed (between requests, or a
 * client that stops sending). */
#define IDLE_TIMEOUT_S 30
/* Bytes a stream hands libmicrohttpd at a time. */
#define STREAM_BLOCK 16384
/* A body over --max-body is read and dropped before the 413, so that a client
 * still sending it gets the answer rather than a reset connection; beyond
 * this many bytes it is refused at once and the connection closed. */
#define DISCARD_MAX ((uint64_t)256 << 20)

struct serve_http {
    struct MHD_Daemon *d;
    serve_http_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* active dropped to 0 */
    size_t active;       /* requests in progress */
    /* Read by every connection's thread without the lock: atomics. limits is
     * written before engine, so a thread that sees engine sees limits. */
    _Atomic int draining;
    serve_engine *_Atomic engine; /* set once the model is loaded */
    serve_limits limits;
    long created;
    _Atomic uint64_t next_id;
};

/* What one request carries between libmicrohttpd's calls. */
typedef struct {
    serve_http *h;
    const char *endpoint; /* for /metrics */
    double t0;
    int is_completion;
    serve_buf body;
    int too_big;
    uint64_t dropped; /* bytes of a body over the limit, read and dropped */
    serve_job *job;
} req_ctx;

/* ---- JSON output ---- */

/* A JSON string of n bytes of UTF-8 (generated text may hold any byte,
 * NUL included, so this is written by hand rather than through cJSON). */
static void json_str(serve_buf *o, const char *s, size_t n) {
    serve_buf_add(o, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f) continue;
        serve_buf_add(o, s + run, i - run);
        run = i + 1;
        switch (ch) {
        case '"':
            serve_buf_str(o, "\\\"");
            break;
        case '\\':
            serve_buf_str(o, "\\\\");
            break;
        case '\n':
            serve_buf_str(o, "\\n");
            break;
        case '\r':
            serve_buf_str(o, "\\r");
            break;
        case '\t':
            serve_buf_str(o, "\\t");
            break;
        default:
            serve_buf_printf(o, "\\u%04x", ch);
        }
    }
    serve_buf_add(o, s + run, n - run);
    serve_buf_add(o, "\"", 1);
}

static void json_cstr(serve_buf *o, const char *s) { json_str(o, s, strlen(s)); }

static void error_json(serve_buf *o, const serve_error *e) {
    serve_buf_str(o, "{\"error\":{\"message\":");
    json_cstr(o, e->message);
    serve_buf_str(o, ",\"type\":");
    json_cstr(o, e->type ? e->type : "invalid_request_error");
    serve_buf_str(o, ",\"param\":");
    if (e->param[0])
        json_cstr(o, e->param);
    else
        serve_buf_str(o, "null");
    serve_buf_str(o, ",\"code\":");
    if (e->code)
        json_cstr(o, e->code);
    else
        serve_buf_str(o, "null");
    serve_buf_str(o, "}}");
}

/* The head every completion object and chunk share. */
static void completion_head(serve_buf *o, const serve_http *h, const char *id, long created) {
    serve_buf_printf(
        o, "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%ld,\"model\":", id, created);
    json_cstr(o, h->cfg.model_name);
}

/* A token as OpenAI names it in logprobs: its text, or "bytes:\xNN..." when
 * its bytes are not whole UTF-8 characters (a character split over tokens). */
static void token_json(serve_buf *o, const gptc_tokenizer *tok, int32_t id) {
    size_t n = 0, bad;
    const char *b = gptc_tokenizer_token_bytes(tok, id, &n);
    if (!b) b = "", n = 0;
    if (serve_utf8_valid(b, n, &bad)) {
        json_str(o, b, n);
        return;
    }
    serve_buf_str(o, "\"bytes:");
    for (size_t i = 0; i < n; i++)
        serve_buf_printf(o, "\\\\x%02x", (unsigned char)b[i]);
    serve_buf_str(o, "\"");
}

/* Characters (not bytes, as OpenAI counts) in the first `off` bytes of s. */
static size_t utf8_chars(const char *s, size_t off) {
    size_t k = 0;
    for (size_t i = 0; i < off; i++)
        k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

/* JSON has no infinity: vLLM writes -9999 for a log-probability of -inf. */
static double lp_value(float v) { return isfinite(v) ? (double)v : -9999.0; }

/* OpenAI's logprobs object of the choice's tokens [t0, t1). */
static void logprobs_json(serve_buf *o, const gptc_tokenizer *tok, const serve_choice *c, size_t t0,
                          size_t t1) {
    serve_buf_str(o, "{\"tokens\":[");
    for (size_t t = t0; t < t1; t++) {
        if (t > t0) serve_buf_str(o, ",");
        token_json(o, tok, c->lps[t].token);
    }
    serve_buf_str(o, "],\"token_logprobs\":[");
    for (size_t t = t0; t < t1; t++) {
        if (t > t0) serve_buf_str(o, ",");
        if (c->lps[t].n_top < 0) /* the prompt's first token: nothing before it */
            serve_buf_str(o, "null");
        else
            serve_buf_printf(o, "%.9g", lp_value(c->lps[t].logprob));
    }
    /* The top tokens, most likely first, and the chosen one when it is not
     * among them (OpenAI: "up to logprobs + 1 elements"). */
    serve_buf_str(o, "],\"top_logprobs\":[");
    for (size_t t = t0; t < t1; t++) {
        const serve_logprob *l = &c->lps[t];
        int chosen_in = 0;
        if (t > t0) serve_buf_str(o, ",");
        if (l->n_top < 0) {
            serve_buf_str(o, "null");
            continue;
        }
        serve_buf_str(o, "{");
        for (int32_t i = 0; i < l->n_top; i++) {
            if (i) serve_buf_str(o, ",");
            token_json(o, tok, l->top_ids[i]);
            serve_buf_printf(o, ":%.9g", lp_value(l->top_logprobs[i]));
            chosen_in |= l->top_ids[i] == l->token;
        }
        if (!chosen_in) {
            if (l->n_top) serve_buf_str(o, ",");
            token_json(o, tok, l->token);
            serve_buf_printf(o, ":%.9g", lp_value(l->logprob));
        }
        serve_buf_str(o, "}");
    }
    serve_buf_str(o, "],\"text_offset\":[");
    /* Offsets in characters, counted on from the previous token's (they
     * do not decrease), so a long answer is not counted from its start
     * once per token. */
    const char *text = c->text.data ? c->text.data : "";
    size_t at = 0, chars = 0;
    for (size_t t = t0; t < t1; t++) {
        size_t off = c->lps[t].text_off < c->text.len ? c->lps[t].text_off : c->text.len;
        if (off < at) at = chars = 0; /* not expected: count from the start */
        chars += utf8_chars(text + at, off - at);
        at = off;
        serve_buf_printf(o, "%s%zu", t > t0 ? "," : "", chars);
    }
    serve_buf_str(o, "]}");
}

/* A choice with text [from, to) and, when tok is given, the logprobs of
 * tokens [t0, t1). */
static void choice_json(serve_buf *o, const serve_choice *c, size_t from, size_t to,
                        const char *finish, const gptc_tokenizer *tok, size_t t0, size_t t1) {
    serve_buf_str(o, "{\"text\":");
    json_str(o, c->text.data ? c->text.data + from : "", to - from);
    serve_buf_printf(o, ",\"index\":%d,\"logprobs\":", c->index);
    if (tok)
        logprobs_json(o, tok, c, t0, t1);
    else
        serve_buf_str(o, "null");
    serve_buf_str(o, ",\"finish_reason\":");
    if (finish)
        json_cstr(o, finish);
    else
        serve_buf_str(o, "null");
    serve_buf_str(o, "}");
}

/* Exact counts: each prompt's tokens once (n choices share it, as OpenAI
 * counts), and every generated token of every choice, eos included. */
static void usage_json(serve_buf *o, const serve_job *j) {
    size_t prompt = 0, gen = 0;
    for (size_t i = 0; i < j->req.n_prompts; i++)
        prompt += j->req.prompts[i].n_ids;
    for (size_t i = 0; i < j->n_choices; i++)
        gen += (size_t)j->choices[i].n_tokens;
    serve_buf_printf(o, "{\"prompt_tokens\":%zu,\"completion_tokens\":%zu,\"total_tokens\":%zu}",
                     prompt, gen, prompt + gen);
}

static void new_id(serve_http *h, char *buf, size_t n) {
    uint64_t k = atomic_fetch_add(&h->next_id, 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, n, "cmpl-%08llx%016llx", (unsigned long long)(ts.tv_sec & 0xffffffff),
             (unsigned long long)k);
}

/* ---- responses ---- */

static enum MHD_Result queue(struct MHD_Connection *conn, req_ctx *x, int status, const char *ctype,
                             serve_buf *body, int close_after) {
    if (body->failed) {
        serve_buf_free(body);
        return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(
        body->len, body->data ? body->data : (void *)"",
        body->data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        serve_buf_free(body);
        return MHD_NO;
    }
    memset(body, 0, sizeof *body); /* the response owns it now */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (close_after) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (status == 429) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 405)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, x->is_completion ? "POST" : "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    serve_metrics_request(x->h->cfg.metrics, x->endpoint, status);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *conn, req_ctx *x, int status,
                                  serve_buf *body) {
    serve_buf_str(body, "\n");
    return queue(conn, x, status, "application/json", body, x->h->draining);
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, req_ctx *x, const serve_error *e) {
    serve_buf o = {0};
    error_json(&o, e);
    serve_buf_str(&o, "\n");
    /* After an error found before the body was read, the connection closes
     * (libmicrohttpd discards the rest); otherwise it may stay open. */
    return queue(conn, x, e->status, "application/json", &o, x->h->draining);
}

#if defined(__GNUC__)
__attribute__((format(printf, 5, 6)))
#endif
static enum MHD_Result
fail(struct MHD_Connection *conn, req_ctx *x, int status, const char *param, const char *fmt, ...) {
    serve_error e;
    serve_error_set(&e, status, param, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    if (status == 401) e.code = "invalid_api_key";
    if (status == 404) e.code = "not_found";
    if (status == 503) e.type = "service_unavailable";
    return reply_error(conn, x, &e);
}

/* ---- streams (server-sent events) ---- */

typedef struct {
    serve_http *h;
    serve_job *job;
    int fd;
    double deadline;
    char id[48];
    long created;
    serve_buf out;
    size_t off;
    int ended;
} stream;

/* The chunks of every piece not sent yet, then, once the job is over, the
 * usage chunk (stream_options.include_usage) and [DONE]. Lock held. */
static void stream_news_locked(stream *s) {
    serve_job *j = s->job;
    serve_buf *o = &s->out;
    for (size_t i = 0; i < j->n_choices && j->state != SERVE_JOB_FAILED; i++) {
        serve_choice *c = &j->choices[i];
        for (; c->sent < c->n_pieces; c->sent++) {
            size_t from = c->sent ? c->pieces[c->sent - 1] : 0, to = c->pieces[c->sent];
            int last = c->finish && c->sent + 1 == c->n_pieces;
            if (to == from && !last) continue; /* a token with no text yet: its logprobs go with the next */
            serve_buf_str(o, "data: ");
            completion_head(o, s->h, s->id, s->created);
            serve_buf_str(o, ",\"choices\":[");
            size_t t1 = last ? c->n_lps : c->piece_lps[c->sent];
            choice_json(o, c, from, to, last ? c->finish : NULL, j->req.logprobs >= 0 ? s->h->limits.tok : NULL,
                        c->lps_sent, t1);
            c->lps_sent = t1;
            serve_buf_str(o, "]}\n\n");
        }
    }
    if (!serve_job_finished(j)) return;
    if (j->state == SERVE_JOB_FAILED) {
        serve_buf_str(o, "data: ");
        error_json(o, &j->error);
        serve_buf_str(o, "\n\n");
    } else if (j->req.include_usage) {
        serve_buf_str(o, "data: ");
        completion_head(o, s->h, s->id, s->created);
        serve_buf_str(o, ",\"choices\":[],\"usage\":");
        usage_json(o, j);
        serve_buf_str(o, "}\n\n");
    }
    serve_buf_str(o, "data: [DONE]\n\n");
    s->ended = 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *s = cls;
    serve_engine *e = s->h->engine;
    while (s->off == s->out.len) {
        if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
        s->out.len = s->off = 0;
        int r = serve_job_wait(e, s->job, serve_job_has_news, s->fd, s->deadline);
        if (r == -1) return MHD_CONTENT_READER_END_WITH_ERROR; /* the client left */
        serve_engine_lock(e);
        if (r == -2) {
            serve_error err;
            serve_error_set(&err, 504, NULL, "request timed out after %g s (--request-timeout)",
                            s->h->cfg.request_timeout);
            err.type = "timeout";
            serve_buf_str(&s->out, "data: ");
            error_json(&s->out, &err);
            serve_buf_str(&s->out, "\n\ndata: [DONE]\n\n");
            s->ended = 1;
        } else
            stream_news_locked(s);
        serve_engine_unlock(e);
        if (s->out.failed) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->out.len - s->off < max ? s->out.len - s->off : max;
    memcpy(buf, s->out.data + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream *s = cls;
    /* Whether it ended or the client left: nothing more is generated. */
    serve_job_cancel(s->h->engine, s->job);
    serve_job_release(s->h->engine, s->job);
    serve_buf_free(&s->out);
    free(s);
}

/* ---- /v1/completions ---- */

static int client_fd(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

static enum MHD_Result timed_out(struct MHD_Connection *conn, req_ctx *x) {
    serve_error e;
    serve_error_set(&e, 504, NULL, "request timed out after %g s (--request-timeout)",
                    x->h->cfg.request_timeout);
    e.type = "timeout";
    return reply_error(conn, x, &e);
}

static enum MHD_Result completions(struct MHD_Connection *conn, req_ctx *x) {
    serve_http *h = x->h;
    serve_engine *e = h->engine;
    if (x->too_big)
        return fail(conn, x, 413, NULL, "request body: larger than %zu bytes (--max-body)",
                    h->cfg.max_body);
    serve_completion req;
    serve_error err;
    if (!serve_completion_parse(x->body.data ? x->body.data : "", x->body.len, &h->limits, &req,
                                &err))
        return reply_error(conn, x, &err);
    serve_buf_free(&x->body);
    int stream_it = req.stream;
    if (!serve_engine_submit(e, &req, x->t0, &x->job, &err)) {
        serve_completion_free(&req);
        return reply_error(conn, x, &err);
    }
    int fd = client_fd(conn);
    double deadline = h->cfg.request_timeout > 0 ? x->t0 + h->cfg.request_timeout : 0;
    /* Wait until the batch took it: a request it refuses (e.g. larger than
     * the K/V cache) is still an error with a status of its own. */
    int r = serve_job_wait(e, x->job, serve_job_accepted, fd, deadline);
    if (r == -1) return MHD_NO;
    if (r == -2) return timed_out(conn, x);
    serve_engine_lock(e);
    int failed = x->job->state == SERVE_JOB_FAILED;
    if (failed) err = x->job->error;
    serve_engine_unlock(e);
    if (failed) return reply_error(conn, x, &err);

    char id[48];
    new_id(h, id, sizeof id);
    long created = (long)time(NULL);
    if (stream_it) {
        stream *s = calloc(1, sizeof *s);
        if (!s) return MHD_NO;
        s->h = h;
        s->job = x->job;
        s->fd = fd;
        s->deadline = deadline;
        snprintf(s->id, sizeof s->id, "%s", id);
        s->created = created;
        serve_engine_lock(e);
        s->job->refs++; /* the stream's own, released by stream_free */
        serve_engine_unlock(e);
        struct MHD_Response *resp = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, s, stream_free);
        if (!resp) {
            stream_free(s);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* nginx: pass each event on */
        if (h->draining) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        serve_metrics_request(h->cfg.metrics, x->endpoint, 200);
        return ret;
    }
    r = serve_job_wait(e, x->job, serve_job_finished, fd, deadline);
    if (r == -1) return MHD_NO;
    if (r == -2) return timed_out(conn, x);
    serve_buf o = {0};
    serve_engine_lock(e);
    serve_job *j = x->job;
    if (j->state == SERVE_JOB_FAILED) {
        err = j->error;
        serve_engine_unlock(e);
        return reply_error(conn, x, &err);
    }
    completion_head(&o, h, id, created);
    serve_buf_str(&o, ",\"choices\":[");
    for (size_t i = 0; i < j->n_choices; i++) {
        if (i) serve_buf_str(&o, ",");
        choice_json(&o, &j->choices[i], 0, j->choices[i].text.len, j->choices[i].finish,
                    j->req.logprobs >= 0 ? h->limits.tok : NULL, 0, j->choices[i].n_lps);
    }
    serve_buf_str(&o, "],\"usage\":");
    usage_json(&o, j);
    serve_buf_str(&o, "}");
    serve_engine_unlock(e);
    return reply_json(conn, x, 200, &o);
}

/* ---- the other routes ---- */

static enum MHD_Result models(struct MHD_Connection *conn, req_ctx *x, const char *one) {
    serve_http *h = x->h;
    if (one && strcmp(one, h->cfg.model_name) != 0)
        return fail(conn, x, 404, "model",
                    "model '%.200s' does not exist (this server has '%.200s')", one,
                    h->cfg.model_name);
    serve_buf o = {0};
    if (!one) serve_buf_str(&o, "{\"object\":\"list\",\"data\":[");
    serve_buf_str(&o, "{\"id\":");
    json_cstr(&o, h->cfg.model_name);
    serve_buf_printf(&o, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"gptc\"", h->created);
    if (h->engine) serve_buf_printf(&o, ",\"max_model_len\":%d", h->limits.n_ctx);
    serve_buf_str(&o, one ? "}" : "}]}");
    return reply_json(conn, x, 200, &o);
}

static enum MHD_Result health(struct MHD_Connection *conn, req_ctx *x) {
    serve_buf o = {0};
    int ok = x->h->engine && !x->h->draining;
    serve_buf_printf(&o, "{\"status\":\"%s\"}",
                     ok               ? "ok"
                     : x->h->draining ? "draining"
                                      : "loading");
    return reply_json(conn, x, ok ? 200 : 503, &o);
}

static enum MHD_Result metrics(struct MHD_Connection *conn, req_ctx *x) {
    serve_gauges g = {0};
    if (x->h->engine) {
        serve_engine_gauges(x->h->engine, &g);
        g.ready = 1;
    }
    serve_buf o = {0};
    serve_metrics_render(x->h->cfg.metrics, &g, &o);
    return queue(conn, x, 200, "text/plain; version=0.0.4; charset=utf-8", &o, x->h->draining);
}

/* The key compared in constant time: the time depends on the key's length
 * only, never on where a guess first differs. */
static int key_matches(const char *given, const char *key) {
    size_t n = strlen(given), m = strlen(key);
    volatile unsigned diff = n != m;
    for (size_t i = 0; i < m; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)given[i < n ? i : 0];
    return diff == 0;
}

static int authorized(struct MHD_Connection *conn, const char *key) {
    const char *v =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!v || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    v += 7;
    while (*v == ' ')
        v++;
    return key_matches(v, key);
}

static const char *endpoint_of(const char *url) {
    static const char *const known[] = {"/v1/completions", "/v1/models", "/health", "/metrics"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(url, known[i]) == 0) return known[i];
    if (strncmp(url, "/v1/models/", 11) == 0) return "/v1/models";
    return "other";
}

/* The headers are in: answers GET routes and errors now, or returns MHD_YES
 * to receive a completion's body. */
static enum MHD_Result first_call(struct MHD_Connection *conn, req_ctx *x, const char *url,
                                  const char *method) {
    serve_http *h = x->h;
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    x->is_completion = strcmp(url, "/v1/completions") == 0;
    if (h->draining) return fail(conn, x, 503, NULL, "the server is shutting down");
    if (strncmp(url, "/v1/", 4) == 0 && h->cfg.api_key && !authorized(conn, h->cfg.api_key))
        return fail(conn, x, 401, NULL,
                    "missing or incorrect API key: send the header 'Authorization: Bearer KEY' "
                    "(--api-key)");
    int known = strcmp(x->endpoint, "other") != 0;
    if (!known) return fail(conn, x, 404, NULL, "%.8s %.200s: no such route", method, url);
    if (x->is_completion ? !post : !get)
        return fail(conn, x, 405, NULL, "%.8s %.200s: method not allowed", method, url);
    if (strcmp(url, "/health") == 0) return health(conn, x);
    if (strcmp(url, "/metrics") == 0) return metrics(conn, x);
    if (strcmp(url, "/v1/models") == 0) return models(conn, x, NULL);
    if (strncmp(url, "/v1/models/", 11) == 0) return models(conn, x, url + 11);
    if (!h->engine)
        return fail(conn, x, 503, NULL, "the model is still loading; retry later (GET /health)");
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    uint64_t len = cl ? strtoull(cl, NULL, 10) : 0;
    if (len > h->cfg.max_body) {
        x->too_big = 1;
        /* A client that waits for "100 Continue" never sends the body. */
        if ((expect && strcasecmp(expect, "100-continue") == 0) || len > DISCARD_MAX)
            return fail(conn, x, 413, NULL, "request body: larger than %zu bytes (--max-body)",
                        h->cfg.max_body);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    serve_http *h = cls;
    req_ctx *x = *con_cls;
    if (!x) {
        if (!(x = calloc(1, sizeof *x))) return MHD_NO;
        x->h = h;
        x->t0 = serve_now();
        x->endpoint = endpoint_of(url);
        *con_cls = x;
        pthread_mutex_lock(&h->mu);
        h->active++;
        pthread_mutex_unlock(&h->mu);
        return first_call(conn, x, url, method);
    }
    if (*upload_size) {
        if (!x->too_big && x->body.len + *upload_size > h->cfg.max_body) {
            x->too_big = 1; /* chunked (no Content-Length): the rest is read and dropped */
            serve_buf_free(&x->body);
        }
        x->dropped += x->too_big ? *upload_size : 0;
        if (x->dropped > DISCARD_MAX) return MHD_NO;
        if (!x->too_big) serve_buf_add(&x->body, upload, *upload_size);
        *upload_size = 0;
        return x->body.failed ? MHD_NO : MHD_YES;
    }
    return completions(conn, x);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)conn, (void)why;
    serve_http *h = cls;
    req_ctx *x = *con_cls;
    if (!x) return;
    *con_cls = NULL;
    if (x->job) {
        serve_job_cancel(h->engine, x->job); /* a no-op when it finished */
        serve_job_release(h->engine, x->job);
    }
    serve_buf_free(&x->body);
    free(x);
    pthread_mutex_lock(&h->mu);
    if (--h->active == 0) pthread_cond_broadcast(&h->idle);
    pthread_mutex_unlock(&h->mu);
}

static void on_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    fprintf(stderr, "gptc serve: libmicrohttpd: %s\n", buf);
}

serve_http *serve_http_start(const serve_http_config *cfg) {
    serve_http *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->cfg = *cfg;
    h->created = (long)time(NULL);
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->idle, &ca);
    pthread_condattr_destroy(&ca);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (cfg->addr->sa_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* One option and its value per line. */
    /* clang-format off */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, h, /* first: it covers the rest */
                            MHD_OPTION_SOCK_ADDR, cfg->addr,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                            MHD_OPTION_END);
    /* clang-format on */
    if (!h->d) {
        pthread_cond_destroy(&h->idle);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

unsigned serve_http_port(const serve_http *h) {
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

void serve_http_ready(serve_http *h, serve_engine *engine, const serve_limits *limits) {
    h->limits = *limits;
    atomic_store(&h->engine, engine);
}

void serve_http_quiesce(serve_http *h) {
    atomic_store(&h->draining, 1);
    MHD_socket s = MHD_quiesce_daemon(h->d);
    if (s != MHD_INVALID_SOCKET) close(s);
}

size_t serve_http_wait_idle(serve_http *h, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = ts.tv_nsec + (long)((seconds - (double)(long)seconds) * 1e9);
    ts.tv_sec += (time_t)seconds + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&h->mu);
    while (h->active && pthread_cond_timedwait(&h->idle, &h->mu, &ts) == 0) {
    }
    size_t left = h->active;
    pthread_mutex_unlock(&h->mu);
    return left;
}

void serve_http_stop(serve_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    pthread_cond_destroy(&h->idle);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
