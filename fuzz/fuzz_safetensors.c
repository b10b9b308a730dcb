/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors parser.
 *
 * Parses the input as a whole safetensors file with st_parse and, when it is
 * accepted, reads every byte of every tensor (so ASan catches any extent that
 * escapes the buffer) and checks the invariants st_parse promises: each
 * tensor lies inside the data section, its byte size is numel times the
 * dtype size, names are unique, and non-empty tensors do not overlap.
 *
 *   ./build-fuzz/fuzz/fuzz_safetensors -max_total_time=30 fuzz/corpus/safetensors
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static size_t dtype_size(st_dtype t) {
    switch (t) {
    case ST_F64: case ST_I64: case ST_U64: return 8;
    case ST_F32: case ST_I32: case ST_U32: return 4;
    case ST_F16: case ST_BF16: case ST_I16: case ST_U16: return 2;
    default: return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    if (st_parse(data, size, "fuzz", &f) != GPTC_OK) {
        if (!gptc_last_error()[0]) abort(); /* a failure must say why */
        return 0;
    }
    if (size < 8) abort();
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | data[i];
    const uint8_t *lo = data + 8 + hlen, *hi = data + size;
    volatile unsigned sink = 0;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (!t->name || t->dtype >= ST_N_DTYPES || t->ndim < 0 || t->ndim > ST_MAX_DIMS) abort();
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) abort();
            numel *= (size_t)t->shape[d];
        }
        if (numel != t->numel || t->numel * dtype_size(t->dtype) != t->nbytes) abort();
        if (t->nbytes && (t->data < lo || t->data > hi || (size_t)(hi - t->data) < t->nbytes)) abort();
        unsigned sum = 0;
        for (size_t b = 0; b < t->nbytes; b++) sum += t->data[b];
        sink += sum;
        if (st_find(&f, t->name) != t) abort(); /* names are unique */
        (void)st_dtype_name(t->dtype);
        for (size_t j = 0; j < i; j++) {
            const st_tensor *u = &f.tensors[j];
            if (t->nbytes && u->nbytes && t->data < u->data + u->nbytes && u->data < t->data + t->nbytes)
                abort();
        }
    }
    (void)sink;
    st_close(&f);
    return 0;
}
