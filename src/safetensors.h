/*
 * safetensors.h - reading the safetensors format, checking everything.
 *
 * A safetensors file is an 8-byte little-endian header length, a JSON header
 * mapping tensor names to {dtype, shape, data_offsets}, then the data section.
 * Every field is untrusted: offsets must lie inside the data section, must not
 * overlap, and must match the shape and dtype exactly.
 */
#ifndef GPTC_SAFETENSORS_H
#define GPTC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"

#define ST_MAX_DIMS 8

typedef enum {
    ST_F64, ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U64, ST_U32, ST_U16,
    ST_U8, ST_BOOL, ST_F8_E4M3, ST_F8_E5M2, ST_N_DTYPES
} st_dtype;

typedef struct {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    const uint8_t *data; /* points into the file's mapping */
    size_t nbytes;
} st_tensor;

typedef struct {
    char *path;       /* for messages */
    void *map;        /* mmap of the whole file, or NULL for st_parse */
    size_t map_len;
    st_tensor *tensors;
    size_t n_tensors;
} st_file;

/* Maps and parses `path`. On failure the message names the file. */
gptc_status st_open(const char *path, st_file *f);
/* Parses a safetensors image held in memory (used by st_open and the fuzzer). */
gptc_status st_parse(const uint8_t *buf, size_t len, const char *path, st_file *f);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype t);

#endif
