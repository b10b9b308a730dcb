/*
 * hub.c - model names like transformers' from_pretrained: a local folder, or
 * a Hugging Face Hub model id resolved through the Hub's cache.
 *
 * The cache is huggingface_hub's, shared with transformers in both
 * directions:
 *
 *   {cache}/models--{org}--{name}/
 *       refs/{revision}            the commit hash the revision pointed to
 *       blobs/{etag}               file contents, named by ETag (git sha1, or sha256 for LFS)
 *       snapshots/{commit}/{file}  -> ../../blobs/{etag}  (relative symlinks)
 *       .no_exist/{commit}/{file}  empty: the file is known to be absent at that commit
 *   {cache}/.locks/models--{org}--{name}/{etag}.lock   taken while a blob downloads
 *
 * A snapshot that already has every file gptc reads is used as it is, without
 * a request: whoever downloaded it. Otherwise the missing files are fetched
 * (download.c), all at the commit the revision resolves to first, so that a
 * branch moving during the download cannot mix two commits.
 */
/* flock(): the lock huggingface_hub's FileLock takes on the same lock files,
 * so that gptc and Python never download one blob at once. */
#define _DEFAULT_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub.h"
#include "internal.h"

#define COMMIT_LEN 40

/* A malloc'ed formatted string, or NULL when out of memory. */
static char *fmt(const char *f, ...) GPTC_PRINTF(1, 2);
static char *fmt(const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

/* A set, non-empty environment variable, or NULL. */
static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* huggingface_hub's truth values for its boolean variables. */
static int env_true(const char *name) {
    const char *v = env(name);
    return v && (strcasecmp(v, "1") == 0 || strcasecmp(v, "ON") == 0 || strcasecmp(v, "YES") == 0 ||
                 strcasecmp(v, "TRUE") == 0);
}

static long env_seconds(const char *name, long dflt) {
    const char *v = env(name);
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    return v && !*end && x > 0 ? x : dflt;
}

/* "~" and "~/..." expanded as os.path.expanduser does; a malloc'ed copy. */
static char *expand_user(const char *p) {
    const char *home = env("HOME");
    if (home && p[0] == '~' && (p[1] == '\0' || p[1] == '/')) return fmt("%s%s", home, p + 1);
    return strdup(p);
}

/* HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
static char *hf_home(void) {
    if (env("HF_HOME")) return expand_user(env("HF_HOME"));
    if (env("XDG_CACHE_HOME")) return fmt("%s/huggingface", env("XDG_CACHE_HOME"));
    if (env("HOME")) return fmt("%s/.cache/huggingface", env("HOME"));
    return NULL;
}

/* The hub cache, as huggingface_hub's constants.HF_HUB_CACHE. */
static char *hub_cache_dir(void) {
    if (env("HF_HUB_CACHE")) return expand_user(env("HF_HUB_CACHE"));
    if (env("HUGGINGFACE_HUB_CACHE")) return expand_user(env("HUGGINGFACE_HUB_CACHE"));
    char *home = hf_home();
    char *dir = home ? fmt("%s/hub", home) : NULL;
    free(home);
    return dir;
}

/* HF_TOKEN, else the token `huggingface-cli login` saved; NULL: none. */
static char *hub_token(void) {
    const char *t = env("HF_TOKEN") ? env("HF_TOKEN") : env("HUGGING_FACE_HUB_TOKEN");
    char *buf = NULL;
    if (!t) {
        char *home = env("HF_TOKEN_PATH") ? NULL : hf_home();
        char *path = env("HF_TOKEN_PATH") ? expand_user(env("HF_TOKEN_PATH"))
                     : home               ? fmt("%s/token", home)
                                          : NULL;
        size_t len;
        if (path && gptc_file_exists(path) && gptc_read_file(path, &buf, &len) == GPTC_OK) t = buf;
        free(path);
        free(home);
        if (!t) return NULL;
    }
    while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r')
        t++;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t' || t[n - 1] == '\n' || t[n - 1] == '\r'))
        n--;
    char *tok = NULL;
    /* A token is one header value: no control characters. */
    int ok = n > 0;
    for (size_t i = 0; i < n && ok; i++)
        ok = (unsigned char)t[i] >= 0x20 && t[i] != 0x7f;
    if (ok && (tok = malloc(n + 1))) {
        memcpy(tok, t, n);
        tok[n] = '\0';
    }
    free(buf);
    return tok;
}

static int is_commit_hash(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return 0;
    return n == COMMIT_LEN;
}

static int word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Why `id` is not a Hub repo id (huggingface_hub's validate_repo_id), or NULL. */
static const char *repo_id_problem(const char *id) {
    const char *slash = strchr(id, '/');
    if (slash && strchr(slash + 1, '/')) return "at most one '/' (name or namespace/name)";
    const char *parts[2] = {id, slash ? slash + 1 : NULL};
    size_t lens[2] = {slash ? (size_t)(slash - id) : strlen(id), slash ? strlen(slash + 1) : 0};
    for (int k = 0; k < 2 && parts[k]; k++) {
        const char *p = parts[k];
        size_t n = lens[k];
        if (n == 0) return "an empty name or namespace";
        for (size_t i = 0; i < n; i++)
            if (!word_char(p[i]) && p[i] != '-' && p[i] != '.')
                return "only letters, digits, '-', '_' and '.' are allowed";
        if (!word_char(p[0]) || !word_char(p[n - 1]))
            return "the name and namespace cannot start or end with '-' or '.'";
    }
    if (lens[slash ? 1 : 0] > 96) return "the name is longer than 96 characters";
    if (strstr(id, "--") || strstr(id, "..")) return "'--' and '..' are not allowed";
    size_t n = strlen(id);
    if (n >= 4 && strcmp(id + n - 4, ".git") == 0) return "it cannot end with '.git'";
    return NULL;
}

/* Why `rev` is not a usable branch, tag or commit name, or NULL. It becomes
 * a path under refs/, so no component may climb out. */
static const char *revision_problem(const char *rev) {
    size_t n = strlen(rev);
    if (n == 0) return "empty";
    if (n > 255) return "longer than 255 characters";
    for (size_t i = 0; i < n; i++)
        if (!word_char(rev[i]) && !strchr("-./+=@", rev[i]))
            return "only letters, digits and '-', '_', '.', '/', '+', '=', '@' are allowed";
    if (rev[0] == '/' || rev[n - 1] == '/' || strstr(rev, "//")) return "an empty path component";
    for (const char *c = rev; c; c = strchr(c, '/')) {
        if (*c == '/') c++;
        size_t len = strcspn(c, "/");
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return "'.' and '..' components are not allowed";
    }
    return NULL;
}

/* A name that can only be meant as a path on this machine. (A relative
 * "a/b/c" is left to the id check, whose message says "no such folder" too.) */
static int looks_like_path(const char *s) {
    size_t n = strlen(s);
    return s[0] == '/' || s[0] == '~' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0 ||
           strncmp(s, "./", 2) == 0 || strncmp(s, "../", 3) == 0 || (n && s[n - 1] == '/');
}

/* mkdir -p */
static gptc_status make_dirs(const char *path) {
    char *p = strdup(path);
    if (!p) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != '\0') continue;
        char keep = *c;
        *c = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            gptc_status st =
                gptc_fail(GPTC_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
            free(p);
            return st;
        }
        *c = keep;
        if (!keep) break;
    }
    free(p);
    if (!gptc_dir_exists(path)) return gptc_fail(GPTC_ERR_IO, "%s: not a folder", path);
    return GPTC_OK;
}

/* Writes `text` to `path` through a temporary file and rename(). */
static gptc_status write_atomic(const char *path, const char *text) {
    char *tmp = fmt("%s.tmp%ld", path, (long)getpid());
    if (!tmp) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    FILE *f = fopen(tmp, "wb");
    int ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0) ok = 0;
    if (ok) ok = rename(tmp, path) == 0;
    gptc_status st =
        ok ? GPTC_OK : gptc_fail(GPTC_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (!ok) remove(tmp);
    free(tmp);
    return st;
}

/* Everything one resolution needs. */
typedef struct {
    const char *id;       /* "org/name" */
    const char *revision; /* as asked: branch, tag or commit */
    char *cache;          /* the hub cache */
    char *repo;           /* {cache}/models--org--name */
    char *locks;          /* {cache}/.locks/models--org--name */
    char commit[COMMIT_LEN + 1];
    char *snap; /* {repo}/snapshots/{commit} */
    hub_client http;
    int online; /* http is initialised */
} hub_ctx;

static void ctx_free(hub_ctx *c) {
    free(c->cache);
    free(c->repo);
    free(c->locks);
    free(c->snap);
    if (c->online) hub_client_free(&c->http);
}

static gptc_status set_commit(hub_ctx *c, const char *commit) {
    size_t n = strlen(commit); /* callers pass a checked hash */
    memcpy(c->commit, commit, n < COMMIT_LEN ? n : COMMIT_LEN);
    c->commit[n < COMMIT_LEN ? n : COMMIT_LEN] = '\0';
    free(c->snap);
    c->snap = fmt("%s/snapshots/%s", c->repo, c->commit);
    return c->snap ? GPTC_OK : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
}

/* 1 if {snapshot}/{file} exists (a symlink must reach its blob). */
static int snap_has(const hub_ctx *c, const char *file) {
    char *p = fmt("%s/%s", c->snap, file);
    int ok = p && gptc_file_exists(p);
    free(p);
    return ok;
}

/* 1 if the cache records that `file` does not exist at the commit. */
static int known_absent(const hub_ctx *c, const char *file) {
    char *p = fmt("%s/.no_exist/%s/%s", c->repo, c->commit, file);
    int ok = p && gptc_file_exists(p);
    free(p);
    return ok;
}

/*
 * The distinct shard names of model.safetensors.index.json's weight_map.
 * Each must be a plain file name in the same folder, as gptc_model_load
 * requires.
 */
static gptc_status index_shards(const char *path, char ***out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    cJSON *j = NULL;
    gptc_status st = gptc_read_json(path, &j);
    if (st != GPTC_OK) return st;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(j);
        return gptc_fail(GPTC_ERR_FORMAT, "%s: missing or malformed 'weight_map'", path);
    }
    size_t cap = 0, n = 0;
    for (const cJSON *e = map->child; e; e = e->next)
        cap++;
    char **names = calloc(cap ? cap : 1, sizeof *names);
    if (!names) st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    for (const cJSON *e = map->child; e && st == GPTC_OK; e = e->next) {
        const char *v = cJSON_IsString(e) ? e->valuestring : NULL;
        if (!v || !v[0] || v[0] == '.' || strchr(v, '/')) {
            st = gptc_fail(GPTC_ERR_FORMAT,
                           "%s: weight_map entry '%s' is not a file name in the folder", path,
                           e->string ? e->string : "");
            break;
        }
        int seen = 0;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strcmp(names[i], v) == 0;
        if (seen) continue;
        if (!(names[n] = strdup(v)))
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        else
            n++;
    }
    if (st == GPTC_OK && n == 0)
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: 'weight_map' names no shards", path);
    cJSON_Delete(j);
    if (st != GPTC_OK) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return st;
    }
    *out = names;
    *n_out = n;
    return GPTC_OK;
}

static void free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Tokenizer files: vocab.json + merges.txt, else tokenizer.json (as
 * gptc_tokenizer_load reads them); also complete when the cache knows the
 * repo has none. */
static int tokenizer_done(const hub_ctx *c) {
    if ((snap_has(c, "vocab.json") && snap_has(c, "merges.txt")) || snap_has(c, "tokenizer.json"))
        return 1;
    return known_absent(c, "tokenizer.json") &&
           (known_absent(c, "vocab.json") || known_absent(c, "merges.txt"));
}

/*
 * NULL if the snapshot holds every file gptc reads, else the first missing
 * one (a static string, or written to buf).
 */
static const char *snapshot_lacks(const hub_ctx *c, char *buf, size_t n) {
    if (!snap_has(c, "config.json")) return "config.json";
    if (!snap_has(c, "model.safetensors")) {
        if (!snap_has(c, "model.safetensors.index.json")) return "model.safetensors";
        char *index = fmt("%s/model.safetensors.index.json", c->snap);
        char **shards = NULL;
        size_t n_shards = 0;
        const char *missing = NULL;
        if (!index || index_shards(index, &shards, &n_shards) != GPTC_OK)
            missing = "a readable model.safetensors.index.json";
        for (size_t i = 0; i < n_shards && !missing; i++)
            if (!snap_has(c, shards[i])) {
                snprintf(buf, n, "%s", shards[i]);
                missing = buf;
            }
        free_names(shards, n_shards);
        free(index);
        if (missing) return missing;
    }
    if (!tokenizer_done(c)) return "vocab.json and merges.txt, or tokenizer.json";
    return NULL;
}

/* The commit refs/{revision} holds, into c->commit; 0 if none is cached. */
static int cached_ref(hub_ctx *c) {
    char *path = fmt("%s/refs/%s", c->repo, c->revision);
    char *text = NULL;
    size_t len = 0;
    int ok = path && gptc_file_exists(path) && gptc_read_file(path, &text, &len) == GPTC_OK;
    if (ok) {
        while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
            text[--len] = '\0';
        ok = is_commit_hash(text) && set_commit(c, text) == GPTC_OK;
    }
    free(text);
    free(path);
    return ok;
}

/* Percent-encodes everything but unreserved characters (and '/' if keep_slash). */
static char *url_quote(const char *s, int keep_slash) {
    char *out = malloc(3 * strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (word_char((char)*p) || *p == '-' || *p == '.' || *p == '~' || (keep_slash && *p == '/'))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

/* {endpoint}/{repo}/resolve/{revision}/{file}, as huggingface_hub's hf_hub_url. */
static char *file_url(const hub_ctx *c, const char *revision, const char *file) {
    char *rev = url_quote(revision, 0), *name = url_quote(file, 1);
    char *url = rev && name ? fmt("%s/%s/resolve/%s/%s", c->http.endpoint, c->id, rev, name) : NULL;
    free(rev);
    free(name);
    return url;
}

/* The Hub's message for a gated repo says so. */
static int mentions_gated(const char *msg) {
    for (const char *p = msg; *p; p++)
        if (strncasecmp(p, "gated", 5) == 0) return 1;
    return 0;
}

/* One line for an HTTP error status about `file`. */
static gptc_status http_error(const hub_ctx *c, const char *file, const hub_meta *m) {
    const char *code = m->error_code, *ep = c->http.endpoint;
    long s = m->status;
    if (strcmp(code, "GatedRepo") == 0 || (s == 403 && mentions_gated(m->error_msg)))
        return gptc_fail(GPTC_ERR_IO,
                         "%s: gated model: accept its conditions at %s/%s, then set HF_TOKEN to a "
                         "token of that account (HTTP %ld)",
                         c->id, ep, c->id, s);
    if (strcmp(code, "RevisionNotFound") == 0)
        return gptc_fail(GPTC_ERR_IO, "revision '%s': not found in %s on %s (HTTP %ld)",
                         c->revision, c->id, ep, s);
    if (strcmp(code, "RepoNotFound") == 0 || s == 401)
        return gptc_fail(
            GPTC_ERR_IO,
            c->http.token
                ? "'%s' is not a local folder, and %s has no model '%s' that HF_TOKEN can "
                  "read (HTTP %ld)"
                : "'%s' is not a local folder, and %s has no public model '%s': for a "
                  "private or gated model set HF_TOKEN (HTTP %ld)",
            c->id, ep, c->id, s);
    if (s == 403)
        return gptc_fail(
            GPTC_ERR_IO,
            "%s: access denied by %s%s: for a gated or private model set HF_TOKEN to a "
            "token with access (HTTP 403)",
            c->id, ep, c->http.token ? " with this HF_TOKEN" : "");
    if (s == 404 && strcmp(file, "config.json") == 0 && strcmp(code, "EntryNotFound") != 0)
        return gptc_fail(GPTC_ERR_IO,
                         "'%s' is not a local folder, and %s has no model '%s' at revision '%s' "
                         "(HTTP 404)",
                         c->id, ep, c->id, c->revision);
    if (s == 404)
        return gptc_fail(GPTC_ERR_IO, "%s: no file '%s' at revision '%s' on %s (HTTP 404)", c->id,
                         file, c->revision, ep);
    return gptc_fail(GPTC_ERR_IO, "%s: %s from %s: HTTP %ld%s%s", c->id, file, ep, s,
                     m->error_msg[0] ? ": " : "", m->error_msg);
}

/* Takes the lock huggingface_hub takes while it downloads this blob; -1 on failure. */
static int lock_blob(const hub_ctx *c, const char *etag) {
    if (make_dirs(c->locks) != GPTC_OK) return -1;
    char *path = fmt("%s/%s.lock", c->locks, etag);
    int fd = path ? open(path, O_RDWR | O_CREAT, 0666) : -1;
    if (fd < 0)
        gptc_fail(GPTC_ERR_IO, "%s: cannot open: %s", path ? path : c->locks, strerror(errno));
    else if (flock(fd, LOCK_EX) != 0) {
        gptc_fail(GPTC_ERR_IO, "%s: cannot lock: %s", path, strerror(errno));
        close(fd);
        fd = -1;
    }
    free(path);
    return fd;
}

/* {snapshot}/{file} -> ../../blobs/{etag}, replacing what was there in one step. */
static gptc_status link_blob(const hub_ctx *c, const char *file, const char *etag) {
    char *target = fmt("../../blobs/%s", etag);
    char *dst = fmt("%s/%s", c->snap, file);
    char *tmp = fmt("%s/.%s.tmp%ld", c->snap, file, (long)getpid());
    gptc_status st = GPTC_OK;
    if (!target || !dst || !tmp)
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    else {
        remove(tmp);
        if (symlink(target, tmp) != 0 || rename(tmp, dst) != 0) {
            st = gptc_fail(GPTC_ERR_IO, "%s: cannot create the link to %s: %s", dst, target,
                           strerror(errno));
            remove(tmp);
        }
    }
    free(target);
    free(dst);
    free(tmp);
    return st;
}

/* Records that `file` does not exist at the commit, as huggingface_hub does. */
static void mark_absent(const hub_ctx *c, const char *file) {
    char *dir = fmt("%s/.no_exist/%s", c->repo, c->commit);
    char *path = dir ? fmt("%s/%s", dir, file) : NULL;
    FILE *f = path && make_dirs(dir) == GPTC_OK ? fopen(path, "ab") : NULL;
    if (f) fclose(f); /* only an optimisation: failing to write it is harmless */
    free(dir);
    free(path);
}

/* An ETag becomes a file name: nothing that could leave blobs/. */
static int etag_ok(const char *e) {
    if (!e[0] || e[0] == '.') return 0;
    for (const char *p = e; *p; p++)
        if (!word_char(*p) && !strchr("-.+=", *p)) return 0;
    return 1;
}

/* The last error, prefixed with the model and file it is about. */
static gptc_status in_context(const hub_ctx *c, const char *file, gptc_status st) {
    char why[768];
    snprintf(why, sizeof why, "%s", gptc_last_error());
    /* hub_get's messages already start with the file name. */
    size_t n = strlen(file);
    if (strncmp(why, file, n) == 0 && why[n] == ':') return gptc_fail(st, "%s: %s", c->id, why);
    return gptc_fail(st, "%s: %s: %s", c->id, file, why);
}

/*
 * Puts `file` into the snapshot unless it is there. `head` is its metadata if
 * already asked for. An optional file the repo lacks sets *present = 0;
 * a required one is an error.
 */
static gptc_status fetch_file(hub_ctx *c, const char *file, int optional, const hub_meta *head,
                              int *present) {
    *present = 1;
    if (snap_has(c, file)) return GPTC_OK;
    *present = 0;
    if (optional && known_absent(c, file)) return GPTC_OK;
    hub_meta own = {0};
    const hub_meta *m = head;
    gptc_status st = GPTC_OK;
    if (!m) {
        char *url = file_url(c, c->commit, file);
        if (!url) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        st = hub_head(&c->http, url, &own);
        free(url);
        if (st != GPTC_OK) return in_context(c, file, st);
        m = &own;
    }
    char *blob = NULL, *part = NULL;
    int fd = -1;
    if (m->status == 404 && optional) {
        if (m->commit[0]) mark_absent(c, file);
        goto done;
    }
    if (m->status >= 400) {
        st = http_error(c, file, m);
        goto done;
    }
    if (!etag_ok(m->etag)) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: %s: the server gave no usable ETag ('%s')", c->id,
                       file, m->etag);
        goto done;
    }
    blob = fmt("%s/blobs/%s", c->repo, m->etag);
    part = fmt("%s/blobs/%s.incomplete", c->repo, m->etag);
    if (!blob || !part) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (!gptc_file_exists(blob)) {
        char *blobs = fmt("%s/blobs", c->repo);
        st = blobs ? make_dirs(blobs) : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        free(blobs);
        if (st != GPTC_OK) goto done;
        if ((fd = lock_blob(c, m->etag)) < 0) {
            st = GPTC_ERR_IO;
            goto done;
        }
        /* Another process may have finished it while this one waited. */
        if (!gptc_file_exists(blob)) {
            if ((st = hub_get(&c->http, m->location, part, m->size, file)) != GPTC_OK) {
                st = in_context(c, file, st);
                goto done;
            }
            if (rename(part, blob) != 0) {
                st = gptc_fail(GPTC_ERR_IO, "%s: cannot rename to %s: %s", part, blob,
                               strerror(errno));
                goto done;
            }
        }
    }
    if ((st = link_blob(c, file, m->etag)) == GPTC_OK) *present = 1;
done:
    if (fd >= 0) close(fd); /* releases the lock */
    free(blob);
    free(part);
    hub_meta_free(&own);
    return st;
}

/* A failure to reach the endpoint, said in the user's terms. */
static gptc_status unreachable(const hub_ctx *c) {
    char why[512];
    snprintf(why, sizeof why, "%s", gptc_last_error());
    return gptc_fail(
        GPTC_ERR_IO,
        "%s: not a local folder, not complete in the cache (%s), and the Hub cannot be "
        "reached: %s",
        c->id, c->repo, why);
}

/* Fetches what the snapshot of c->revision lacks; sets c->commit / c->snap. */
static gptc_status download(hub_ctx *c) {
    char *token = hub_token();
    const char *ep = env("HF_ENDPOINT") ? env("HF_ENDPOINT") : "https://huggingface.co";
    char *endpoint = strdup(ep);
    gptc_status st = endpoint ? GPTC_OK : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    if (st == GPTC_OK) {
        size_t n = strlen(endpoint);
        while (n && endpoint[n - 1] == '/')
            endpoint[--n] = '\0';
        st = hub_client_init(&c->http, endpoint, token);
    }
    free(endpoint);
    free(token);
    if (st != GPTC_OK) return st;
    c->online = 1;
    c->http.etag_timeout_s = env_seconds("HF_HUB_ETAG_TIMEOUT", 10);
    c->http.download_timeout_s = env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10);
    c->http.progress = isatty(STDERR_FILENO) && !env_true("HF_HUB_DISABLE_PROGRESS_BARS");

    /* config.json at the revision names the commit every other file is taken at. */
    hub_meta cm = {0};
    char *url = file_url(c, c->revision, "config.json");
    if (!url) return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    st = hub_head(&c->http, url, &cm);
    free(url);
    if (st != GPTC_OK) return unreachable(c);
    const char *commit = cm.commit[0]                  ? cm.commit
                         : is_commit_hash(c->revision) ? c->revision
                                                       : NULL;
    char *refs = NULL;
    int present;
    if (cm.status >= 400)
        st = http_error(c, "config.json", &cm);
    else if (!commit)
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: %s gave no X-Repo-Commit header for revision '%s'",
                       c->id, c->http.endpoint, c->revision);
    else if (!is_commit_hash(commit))
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: X-Repo-Commit '%s' is not a commit hash", c->id,
                       commit);
    if (st == GPTC_OK) st = set_commit(c, commit);
    if (st == GPTC_OK) st = make_dirs(c->snap);
    if (st == GPTC_OK && strcmp(c->revision, c->commit) != 0) {
        /* refs/{revision}, written first as huggingface_hub does; a revision
         * such as refs/pr/1 nests. */
        char *ref = fmt("%s/refs/%s", c->repo, c->revision);
        char *slash = ref ? strrchr(ref, '/') : NULL;
        if (!ref)
            st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        else {
            *slash = '\0';
            st = make_dirs(ref);
            *slash = '/';
            if (st == GPTC_OK) st = write_atomic(ref, c->commit);
        }
        refs = ref;
    }
    if (st == GPTC_OK) st = fetch_file(c, "config.json", 0, &cm, &present);
    hub_meta_free(&cm);
    free(refs);
    if (st != GPTC_OK) return st;

    /* The weights: one file, or an index and its shards. */
    int single = 0, index = 0;
    if ((st = fetch_file(c, "model.safetensors", 1, NULL, &single)) != GPTC_OK) return st;
    if (!single && (st = fetch_file(c, "model.safetensors.index.json", 1, NULL, &index)) != GPTC_OK)
        return st;
    if (!single && !index)
        return gptc_fail(
            GPTC_ERR_UNSUPPORTED,
            "%s (revision '%s') has no model.safetensors or model.safetensors.index.json: "
            "gptc reads safetensors checkpoints only",
            c->id, c->revision);
    if (index) {
        char *path = fmt("%s/model.safetensors.index.json", c->snap);
        char **shards = NULL;
        size_t n = 0;
        st = path ? index_shards(path, &shards, &n) : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n && st == GPTC_OK; i++)
            st = fetch_file(c, shards[i], 0, NULL, &present);
        free_names(shards, n);
        free(path);
        if (st != GPTC_OK) return st;
    }
    if ((st = fetch_file(c, "generation_config.json", 1, NULL, &present)) != GPTC_OK) return st;
    /* The tokenizer gptc reads: vocab.json + merges.txt, else tokenizer.json. */
    int vocab = 0, merges = 0;
    if ((st = fetch_file(c, "vocab.json", 1, NULL, &vocab)) != GPTC_OK) return st;
    if ((st = fetch_file(c, "merges.txt", 1, NULL, &merges)) != GPTC_OK) return st;
    if (!(vocab && merges) && (st = fetch_file(c, "tokenizer.json", 1, NULL, &present)) != GPTC_OK)
        return st;
    return GPTC_OK;
}

gptc_status gptc_hub_resolve(const char *name, const char *revision, char **dir_out) {
    if (!dir_out) return gptc_fail(GPTC_ERR_ARG, "gptc_hub_resolve: dir_out is NULL");
    *dir_out = NULL;
    if (!name || !*name) return gptc_fail(GPTC_ERR_ARG, "model: empty name");
    if (gptc_dir_exists(name)) {
        *dir_out = strdup(name);
        return *dir_out ? GPTC_OK : gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    if (gptc_file_exists(name))
        return gptc_fail(GPTC_ERR_IO, "%s: is a file, not a model folder", name);
    if (looks_like_path(name))
        return gptc_fail(GPTC_ERR_IO, "%s: model folder does not exist", name);
    const char *why = repo_id_problem(name);
    if (why)
        return gptc_fail(GPTC_ERR_ARG,
                         "model '%s': no such folder, and not a Hugging Face Hub model id: %s",
                         name, why);
    if (!revision || !*revision) revision = "main";
    if ((why = revision_problem(revision)))
        return gptc_fail(GPTC_ERR_ARG, "revision '%s': %s", revision, why);

    hub_ctx c = {.id = name, .revision = revision};
    gptc_status st = GPTC_OK;
    c.cache = hub_cache_dir();
    if (!c.cache) {
        ctx_free(&c);
        return gptc_fail(GPTC_ERR_IO,
                         "%s: cannot find the Hugging Face cache: set HF_HUB_CACHE or HOME", name);
    }
    /* models--org--name: '/' becomes "--", which a repo id cannot contain. */
    const char *slash = strchr(name, '/');
    char *folder = slash ? fmt("models--%.*s--%s", (int)(slash - name), name, slash + 1)
                         : fmt("models--%s", name);
    c.repo = folder ? fmt("%s/%s", c.cache, folder) : NULL;
    c.locks = folder ? fmt("%s/.locks/%s", c.cache, folder) : NULL;
    free(folder);
    if (!c.repo || !c.locks) {
        ctx_free(&c);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }

    /* The cache first: a commit hash names its snapshot, a branch or tag goes
     * through refs/. */
    int known = is_commit_hash(revision) ? set_commit(&c, revision) == GPTC_OK : cached_ref(&c);
    char lack_buf[256];
    const char *lacks = known ? snapshot_lacks(&c, lack_buf, sizeof lack_buf) : "refs";
    if (!lacks) {
        *dir_out = c.snap;
        c.snap = NULL;
        ctx_free(&c);
        return GPTC_OK;
    }
    if (env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE")) {
        if (!known)
            st = gptc_fail(GPTC_ERR_IO,
                           "HF_HUB_OFFLINE is set and %s (revision '%s') is not in the cache: no "
                           "%s/refs/%s",
                           name, revision, c.repo, revision);
        else
            st = gptc_fail(
                GPTC_ERR_IO,
                "HF_HUB_OFFLINE is set and the cached %s (revision '%s') lacks %s: looked "
                "in %s",
                name, revision, lacks, c.snap);
        ctx_free(&c);
        return st;
    }
    if ((st = download(&c)) == GPTC_OK) {
        /* Check the result the way an offline run will. */
        lacks = snapshot_lacks(&c, lack_buf, sizeof lack_buf);
        if (lacks && strcmp(lacks, "vocab.json and merges.txt, or tokenizer.json") != 0)
            st = gptc_fail(GPTC_ERR_FORMAT, "%s: the download left %s without %s", name, c.snap,
                           lacks);
    }
    if (st == GPTC_OK) {
        *dir_out = c.snap;
        c.snap = NULL;
    }
    ctx_free(&c);
    return st;
}
