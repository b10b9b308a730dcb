/*
 * internal.h - helpers shared by the library's files; not part of the API.
 */
#ifndef GPTC_INTERNAL_H
#define GPTC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"

#if defined(__GNUC__)
#define GPTC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GPTC_PRINTF(a, b)
#endif

/* Records the thread's last error message and returns `status`. */
gptc_status gptc_fail(gptc_status status, const char *fmt, ...) GPTC_PRINTF(2, 3);

/*
 * Reads a whole file into a malloc'ed, NUL-terminated buffer. On failure
 * records an error naming `path` and returns GPTC_ERR_IO.
 */
gptc_status gptc_read_file(const char *path, char **data, size_t *len);

/*
 * Reads and parses a JSON file. On failure records an error naming `path`
 * (and the line, for malformed JSON) and returns GPTC_ERR_IO or
 * GPTC_ERR_FORMAT. The caller frees *out with cJSON_Delete.
 */
struct cJSON;
gptc_status gptc_read_json(const char *path, struct cJSON **out);

/* "dir/name" in a malloc'ed string, or NULL when out of memory. */
char *gptc_path_join(const char *dir, const char *name);

/* 1 if `path` names an existing regular file / folder. */
int gptc_file_exists(const char *path);
int gptc_dir_exists(const char *path);

/* splitmix64: a counter-based generator, so any element of a random stream
 * can be computed independently (by any thread, or on a GPU) and reproduced. */
static inline uint64_t gptc_splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

#endif
