/*
 * safetensors.c - parser for the safetensors container.
 *
 * The header is parsed with cJSON; every tensor's extent is checked against
 * the data section before any pointer into it is handed out, so a hostile or
 * truncated file yields an error naming the file and the tensor, never a read
 * outside the mapping.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* A header larger than this is not a model header but an attack or garbage. */
#define ST_MAX_HEADER (100u << 20)

static const struct {
    const char *name;
    size_t size;
} k_dtypes[ST_N_DTYPES] = {
    [ST_F64] = {"F64", 8},   [ST_F32] = {"F32", 4},     [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I64] = {"I64", 8},     [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},       [ST_U64] = {"U64", 8},
    [ST_U32] = {"U32", 4},   [ST_U16] = {"U16", 2},     [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(st_dtype t) { return t < ST_N_DTYPES ? k_dtypes[t].name : "?"; }

/* A JSON number that is a non-negative integer exactly representable. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

static gptc_status parse_entry(const cJSON *e, const uint8_t *data, size_t data_len,
                               const char *path, st_tensor *t) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': header entry is not an object", path,
                         name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': missing or non-string dtype", path,
                         name);
    int found = -1;
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(dt->valuestring, k_dtypes[i].name) == 0) found = i;
    if (found < 0)
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", path, name,
                         dt->valuestring);
    t->dtype = (st_dtype)found;
    if (!cJSON_IsArray(sh))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': missing or non-array shape", path,
                         name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", path,
                         name, nd, ST_MAX_DIMS);
    t->ndim = nd;
    size_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!json_uint(cJSON_GetArrayItem(sh, i), &d))
            return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                             path, name, i);
        if (d && numel > SIZE_MAX / d)
            return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': shape product overflows", path, name);
        numel *= (size_t)d;
        t->shape[i] = (int64_t)d;
    }
    t->numel = numel;
    uint64_t b0, b1;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_uint(cJSON_GetArrayItem(off, 0), &b0) || !json_uint(cJSON_GetArrayItem(off, 1), &b1))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s': data_offsets must be two non-negative integers",
                         path, name);
    if (b0 > b1 || b1 > data_len)
        return gptc_fail(GPTC_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] out of bounds of the %zu-byte data section",
                         path, name, (unsigned long long)b0, (unsigned long long)b1, data_len);
    size_t esz = k_dtypes[found].size;
    if (numel > SIZE_MAX / esz || numel * esz != (size_t)(b1 - b0))
        return gptc_fail(GPTC_ERR_FORMAT,
                         "%s: tensor '%s': shape holds %zu elements of %s but data_offsets span %llu bytes",
                         path, name, numel, k_dtypes[found].name, (unsigned long long)(b1 - b0));
    t->data = data + b0;
    t->nbytes = (size_t)(b1 - b0);
    return GPTC_OK;
}

gptc_status st_parse(const uint8_t *buf, size_t len, const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    gptc_status st = GPTC_OK;
    cJSON *root = NULL;
    f->path = strdup(path);
    if (!f->path) return gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory", path);
    if (len < 8) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the 8-byte header length",
                       path, len);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > len - 8 || hlen > ST_MAX_HEADER) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: header length %llu is past the end of the %zu-byte file",
                       path, (unsigned long long)hlen, len);
        goto fail;
    }
    root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    if (!cJSON_IsObject(root)) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: header is not a valid JSON object", path);
        goto fail;
    }
    const uint8_t *data = buf + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    size_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next) n++;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        st = gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        st_tensor *t = &f->tensors[f->n_tensors];
        if ((st = parse_entry(e, data, data_len, path, t)) != GPTC_OK) goto fail;
        if (st_find(f, e->string)) {
            st = gptc_fail(GPTC_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path,
                           e->string);
            goto fail;
        }
        if (!(t->name = strdup(e->string))) {
            st = gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        f->n_tensors++;
    }
    /* Overlap check: sorted by start, each non-empty tensor must begin at or
     * after the end of the one before. */
    if (f->n_tensors > 1) {
        st_tensor **order = malloc(f->n_tensors * sizeof *order);
        if (!order) {
            st = gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
        qsort(order, f->n_tensors, sizeof *order, cmp_by_offset);
        const st_tensor *prev = NULL;
        for (size_t i = 0; i < f->n_tensors; i++) {
            const st_tensor *t = order[i];
            if (!t->nbytes) continue;
            if (prev && t->data < prev->data + prev->nbytes) {
                st = gptc_fail(GPTC_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section",
                               path, prev->name, t->name);
                free(order);
                goto fail;
            }
            prev = t;
        }
        free(order);
    }
    cJSON_Delete(root);
    return GPTC_OK;
fail:
    cJSON_Delete(root);
    st_close(f);
    return st;
}

gptc_status st_open(const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gptc_fail(GPTC_ERR_IO, "%s: cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return gptc_fail(GPTC_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return gptc_fail(GPTC_ERR_IO, "%s: cannot map %zu bytes", path, len);
        }
    }
    close(fd);
    static const uint8_t empty[1];
    gptc_status st = st_parse(map ? map : empty, len, path, f);
    if (st != GPTC_OK) {
        if (map) munmap(map, len);
        return st;
    }
    f->map = map;
    f->map_len = len;
    return GPTC_OK;
}

void st_close(st_file *f) {
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    if (f->map) munmap(f->map, f->map_len);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}
