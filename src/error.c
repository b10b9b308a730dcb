/*
 * error.c - the thread-local last-error message and small file helpers.
 *
 * Library functions report failure by status code; the message explains it
 * in one line that names the file, field or argument at fault.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static _Thread_local char g_error[1024];

const char *gptc_last_error(void) { return g_error; }

gptc_status gptc_fail(gptc_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    /* Keep the message on one line whatever was interpolated into it. */
    for (char *p = g_error; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return status;
}

gptc_status gptc_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return gptc_fail(GPTC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return gptc_fail(GPTC_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    if (n && fread(buf, 1, n, f) != n) {
        free(buf);
        fclose(f);
        return gptc_fail(GPTC_ERR_IO, "%s: read error", path);
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return GPTC_OK;
}

char *gptc_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (k && p[k - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int gptc_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int gptc_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The 1-based line of a byte offset, for messages about JSON files. */
static size_t line_of(const char *text, size_t offset) {
    size_t line = 1;
    for (size_t i = 0; i < offset; i++)
        line += text[i] == '\n';
    return line;
}

gptc_status gptc_read_json(const char *path, cJSON **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    gptc_status st = gptc_read_file(path, &text, &len);
    if (st != GPTC_OK) return st;
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*out) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        st =
            gptc_fail(GPTC_ERR_FORMAT, "%s: malformed JSON near line %zu", path, line_of(text, at));
    }
    free(text);
    return st;
}
