/*
 * download.c - HTTP for the Hugging Face Hub, with libcurl.
 *
 * Behaves like huggingface_hub's hf_hub_download. A HEAD request for
 * {endpoint}/{repo}/resolve/{revision}/{file} tells the commit (X-Repo-Commit),
 * the blob's name (X-Linked-Etag, else ETag) and its size (X-Linked-Size, else
 * Content-Length). The Hub answers a large (LFS) file with a redirect to a CDN:
 * that redirect is not followed by the HEAD, its Location is where the GET
 * goes. Redirects are followed by hand, not by libcurl, so that the token is
 * sent to the endpoint's own origin (scheme, host, port) and nowhere else,
 * whatever the redirect chain. A GET resumes a partial file with a Range
 * request.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "internal.h"

#define MAX_REDIRECTS 10

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init;

/* curl_global_init is not thread-safe in older libcurl: run it once. */
static void curl_init_once(void) { g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* One HTTP response: its status, the headers the Hub protocol uses, and
 * where its body goes. */
typedef struct {
    long status;
    char commit[64], etag[160], linked_etag[160], error_code[64], error_msg[256];
    char content_range[96];
    int64_t content_length, linked_size;
    /* body (GET) */
    FILE *f;
    int64_t resume;  /* bytes already in f when the request was sent */
    int64_t written; /* body bytes written to f */
    int started, bad_range, write_failed;
    /* progress bar */
    const char *label;
    int bar;
    int64_t expect;
    double t0, last_draw;
} response;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Copies a header value (trimmed) into dst. */
static void copy_value(char *dst, size_t n, const char *v, size_t len) {
    while (len && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len &&
           (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r' || v[len - 1] == '\n'))
        len--;
    if (len >= n) len = n - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

/* ETag: W/"abc" or "abc" -> abc, as huggingface_hub's _normalize_etag. */
static void normalize_etag(char *e) {
    size_t n = strlen(e);
    size_t off = 0;
    if (n >= 2 && e[0] == 'W' && e[1] == '/') off = 2;
    if (n - off >= 2 && e[off] == '"' && e[n - 1] == '"') {
        off++;
        n--;
    }
    memmove(e, e + off, n - off);
    e[n - off] = '\0';
}

static int64_t parse_size(const char *v) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    return *v && !*end && !errno && x >= 0 ? (int64_t)x : -1;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud) {
    response *r = ud;
    size_t len = sz * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue, say): forget the last one's headers. */
        FILE *f = r->f;
        int64_t resume = r->resume, expect = r->expect;
        const char *label = r->label;
        int bar = r->bar;
        double t0 = r->t0;
        *r = (response){.f = f,
                        .resume = resume,
                        .expect = expect,
                        .label = label,
                        .bar = bar,
                        .t0 = t0,
                        .content_length = -1,
                        .linked_size = -1};
        const char *s = memchr(p, ' ', len);
        if (s) r->status = strtol(s + 1, NULL, 10);
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon) return len;
    size_t name_len = (size_t)(colon - p);
    const char *v = colon + 1;
    size_t vlen = len - name_len - 1;
    char tmp[32];
#define IS(name) (name_len == sizeof name - 1 && strncasecmp(p, name, name_len) == 0)
    if (IS("X-Repo-Commit"))
        copy_value(r->commit, sizeof r->commit, v, vlen);
    else if (IS("X-Linked-Etag"))
        copy_value(r->linked_etag, sizeof r->linked_etag, v, vlen);
    else if (IS("ETag"))
        copy_value(r->etag, sizeof r->etag, v, vlen);
    else if (IS("X-Error-Code"))
        copy_value(r->error_code, sizeof r->error_code, v, vlen);
    else if (IS("X-Error-Message"))
        copy_value(r->error_msg, sizeof r->error_msg, v, vlen);
    else if (IS("Content-Range"))
        copy_value(r->content_range, sizeof r->content_range, v, vlen);
    else if (IS("Content-Length")) {
        copy_value(tmp, sizeof tmp, v, vlen);
        r->content_length = parse_size(tmp);
    } else if (IS("X-Linked-Size")) {
        copy_value(tmp, sizeof tmp, v, vlen);
        r->linked_size = parse_size(tmp);
    }
#undef IS
    return len;
}

static int body_status(long s) { return s == 200 || s == 206; }

static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
    response *r = ud;
    size_t len = sz * n;
    /* Bodies of redirects and errors are not the file. */
    if (!r->f || !body_status(r->status)) return len;
    if (!r->started) {
        r->started = 1;
        if (r->status == 200 && r->resume > 0) {
            /* The server ignored the Range header: start over. */
            fflush(r->f);
            if (ftruncate(fileno(r->f), 0) != 0) {
                r->write_failed = 1;
                return 0;
            }
            r->resume = 0;
        } else if (r->status == 206) {
            long long start = -1;
            if (sscanf(r->content_range, "bytes %lld-", &start) != 1 || start != r->resume) {
                r->bad_range = 1;
                return 0;
            }
        }
    }
    if (fwrite(p, 1, len, r->f) != len) {
        r->write_failed = 1;
        return 0;
    }
    r->written += (int64_t)len;
    return len;
}

/* "532 kB", "1.6 MB", "6.4 GB" */
static void human_bytes(char *buf, size_t n, double b) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4)
        b /= 1000, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

static void draw_bar(response *r, int final) {
    int64_t done = r->resume + r->written;
    int64_t total = r->content_length >= 0 ? r->resume + r->content_length : r->expect;
    double dt = mono_s() - r->t0;
    char d[32], t[32], rate[32];
    human_bytes(d, sizeof d, (double)done);
    human_bytes(t, sizeof t, (double)total);
    human_bytes(rate, sizeof rate, dt > 0 ? (double)r->written / dt : 0);
    if (total > 0)
        fprintf(stderr, "\r%-32.32s %3d%% %10s / %-10s %10s/s", r->label,
                (int)(100.0 * (double)done / (double)total), d, t, rate);
    else
        fprintf(stderr, "\r%-32.32s %10s %10s/s", r->label, d, rate);
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    response *r = ud;
    if (!r->bar || !r->started) return 0;
    double now = mono_s();
    if (now - r->last_draw >= 0.1) {
        r->last_draw = now;
        draw_bar(r, 0);
    }
    return 0;
}

/* "scheme://host:port" of a URL into buf; 0 if it does not parse. */
static int origin_of(const char *url, char *buf, size_t n) {
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK;
    if (ok) snprintf(buf, n, "%s://%s:%s", scheme, host, port);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

/* Redirects may lead to http(s) only (older libcurl lacks CURLOPT_PROTOCOLS_STR). */
static int is_http(const char *url) {
    char o[512];
    return origin_of(url, o, sizeof o) &&
           (strncasecmp(o, "http://", 7) == 0 || strncasecmp(o, "https://", 8) == 0);
}

static int same_origin(const char *a, const char *b) {
    char oa[512], ob[512];
    return origin_of(a, oa, sizeof oa) && origin_of(b, ob, sizeof ob) && strcasecmp(oa, ob) == 0;
}

gptc_status hub_client_init(hub_client *c, const char *endpoint, const char *token) {
    *c = (hub_client){.etag_timeout_s = 10, .download_timeout_s = 10};
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init != CURLE_OK)
        return gptc_fail(GPTC_ERR_IO, "libcurl: initialisation failed: %s",
                         curl_easy_strerror(g_curl_init));
    c->curl = curl_easy_init();
    c->endpoint = strdup(endpoint);
    c->token = token ? strdup(token) : NULL;
    if (!c->curl || !c->endpoint || (token && !c->token)) {
        hub_client_free(c);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    return GPTC_OK;
}

void hub_client_free(hub_client *c) {
    if (c->curl) curl_easy_cleanup(c->curl);
    free(c->endpoint);
    free(c->token);
    *c = (hub_client){0};
}

/*
 * One request, no redirect followed. *redirect receives the resolved
 * Location of a 3xx (malloc'ed) or NULL. Failure: a transport error.
 */
static gptc_status perform(hub_client *c, const char *url, int head, response *r, char **redirect) {
    CURL *h = c->curl;
    *redirect = NULL;
    curl_easy_reset(h);
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL, *t = NULL;
    char range[64];
    int ok = 1;
    if (c->token && same_origin(url, c->endpoint)) {
        size_t n = strlen(c->token) + 32;
        char *auth = malloc(n);
        if (auth) snprintf(auth, n, "Authorization: Bearer %s", c->token);
        ok &= auth && (t = curl_slist_append(hdrs, auth)) != NULL;
        if (ok) hdrs = t;
        free(auth);
    }
    if (r->resume > 0) {
        snprintf(range, sizeof range, "Range: bytes=%lld-", (long long)r->resume);
        ok &= ok && (t = curl_slist_append(hdrs, range)) != NULL;
        if (ok) hdrs = t;
    }
    if (!ok) {
        curl_slist_free_all(hdrs);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "gptc/" GPTC_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    if (head) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, c->etag_timeout_s);
    } else {
        /* No total timeout for a file of gigabytes: a stalled one fails instead. */
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->download_timeout_s);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->download_timeout_s);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, r->bar ? 0L : 1L);
    }
    r->t0 = r->last_draw = mono_s();
    CURLcode e = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    if (e != CURLE_OK && !(e == CURLE_WRITE_ERROR && (r->bad_range || r->write_failed))) {
        char origin[512];
        if (!origin_of(url, origin, sizeof origin)) snprintf(origin, sizeof origin, "%s", url);
        return gptc_fail(GPTC_ERR_IO, "%s: %s", origin, errbuf[0] ? errbuf : curl_easy_strerror(e));
    }
    if (r->status >= 300 && r->status < 400) {
        char *loc = NULL;
        curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &loc);
        if (loc && !is_http(loc))
            return gptc_fail(GPTC_ERR_IO, "%s: redirect to a URL that is not http(s)", url);
        if (loc && !(*redirect = strdup(loc))) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    return GPTC_OK;
}

void hub_meta_free(hub_meta *m) {
    free(m->location);
    m->location = NULL;
}

/* Takes what one response says about the file into m (later hops win). */
static void take_meta(hub_meta *m, const response *r) {
    m->status = r->status;
    if (r->commit[0]) snprintf(m->commit, sizeof m->commit, "%s", r->commit);
    const char *etag = r->linked_etag[0] ? r->linked_etag : r->etag;
    if (etag[0]) {
        snprintf(m->etag, sizeof m->etag, "%s", etag);
        normalize_etag(m->etag);
    }
    if (r->linked_size >= 0)
        m->size = r->linked_size;
    else if (r->status == 200 && r->content_length >= 0)
        m->size = r->content_length;
    snprintf(m->error_code, sizeof m->error_code, "%s", r->error_code);
    snprintf(m->error_msg, sizeof m->error_msg, "%s", r->error_msg);
}

gptc_status hub_head(hub_client *c, const char *url, hub_meta *m) {
    *m = (hub_meta){.size = -1};
    char *cur = strdup(url);
    if (!cur) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    for (int hop = 0; hop <= MAX_REDIRECTS; hop++) {
        response r = {.content_length = -1, .linked_size = -1};
        char *next = NULL;
        gptc_status st = perform(c, cur, 1, &r, &next);
        if (st != GPTC_OK) {
            free(cur);
            return st;
        }
        take_meta(m, &r);
        if (!next) {
            m->location = cur;
            return GPTC_OK;
        }
        if (!same_origin(next, c->endpoint)) {
            m->location = next;
            free(cur);
            return GPTC_OK;
        }
        free(cur);
        cur = next;
    }
    free(cur);
    return gptc_fail(GPTC_ERR_IO, "%s: more than %d redirects", url, MAX_REDIRECTS);
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

gptc_status hub_get(hub_client *c, const char *url, const char *path, int64_t expect,
                    const char *label) {
    int64_t have = file_size(path);
    if (expect >= 0 && have == expect) return GPTC_OK;
    FILE *f = fopen(path, expect >= 0 && have > expect ? "wb" : "ab");
    if (!f) return gptc_fail(GPTC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (expect >= 0 && have > expect) have = 0;
    char *cur = strdup(url);
    gptc_status st = cur ? GPTC_OK : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    int restarted = 0;
    response r = {0};
    for (int hop = 0; st == GPTC_OK; hop++) {
        if (hop > MAX_REDIRECTS) {
            st = gptc_fail(GPTC_ERR_IO, "%s: more than %d redirects", label, MAX_REDIRECTS);
            break;
        }
        r = (response){.f = f,
                       .resume = have,
                       .label = label,
                       .bar = c->progress,
                       .expect = expect,
                       .content_length = -1,
                       .linked_size = -1};
        char *next = NULL;
        if ((st = perform(c, cur, 0, &r, &next)) != GPTC_OK) break;
        if (next) {
            free(cur);
            cur = next;
            continue;
        }
        if (r.status == 416 && have > 0 && !restarted) {
            /* The partial file is not a prefix the server can continue. */
            restarted = 1;
            have = 0;
            if (fflush(f) != 0 || ftruncate(fileno(f), 0) != 0) {
                st = gptc_fail(GPTC_ERR_IO, "%s: cannot truncate: %s", path, strerror(errno));
                break;
            }
            continue;
        }
        break;
    }
    if (r.bar && r.started) draw_bar(&r, 1);
    if (st == GPTC_ERR_IO && r.written > 0) {
        char why[768];
        snprintf(why, sizeof why, "%s", gptc_last_error());
        st = gptc_fail(st, "%s (run again to resume)", why);
    }
    if (st == GPTC_OK && !body_status(r.status)) {
        char origin[512];
        if (!origin_of(cur, origin, sizeof origin)) snprintf(origin, sizeof origin, "the server");
        st = gptc_fail(GPTC_ERR_IO, "%s: download failed: HTTP %ld from %s", label, r.status,
                       origin);
    } else if (st == GPTC_OK && r.bad_range)
        st = gptc_fail(GPTC_ERR_IO,
                       "%s: the server resumed at the wrong offset (Content-Range '%s')", label,
                       r.content_range);
    else if (st == GPTC_OK && r.write_failed)
        st = gptc_fail(GPTC_ERR_IO, "%s: write error: %s", path, strerror(errno));
    /* An empty 200 answer to a Range request: the file is empty. */
    if (st == GPTC_OK && r.status == 200 && !r.started && r.resume > 0) {
        if (fflush(f) != 0 || ftruncate(fileno(f), 0) != 0)
            st = gptc_fail(GPTC_ERR_IO, "%s: cannot truncate: %s", path, strerror(errno));
        r.resume = 0;
    }
    if (fclose(f) != 0 && st == GPTC_OK)
        st = gptc_fail(GPTC_ERR_IO, "%s: write error: %s", path, strerror(errno));
    free(cur);
    if (st != GPTC_OK) return st;
    int64_t got = file_size(path);
    int64_t want = expect >= 0 ? expect : r.content_length >= 0 ? r.resume + r.content_length : -1;
    if (want >= 0 && got != want)
        return gptc_fail(GPTC_ERR_IO,
                         "%s: download incomplete: %lld of %lld bytes (run again to resume)", label,
                         (long long)got, (long long)want);
    return GPTC_OK;
}
