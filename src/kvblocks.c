/*
 * kvblocks.c - free list and holder counts of the paged K/V cache.
 */
#include "kvblocks.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

gptc_status kvb_init(kv_blocks *b, int32_t n_blocks, int32_t block_size) {
    memset(b, 0, sizeof *b);
    b->free_ids = malloc((size_t)n_blocks * sizeof *b->free_ids);
    b->refs = calloc((size_t)n_blocks, sizeof *b->refs);
    if (!b->free_ids || !b->refs) {
        kvb_destroy(b);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory");
    }
    b->n_blocks = b->n_free = n_blocks;
    b->block_size = block_size;
    /* Low ids on top, handed out first: a small batch stays in few pages. */
    for (int32_t i = 0; i < n_blocks; i++) b->free_ids[i] = n_blocks - 1 - i;
    return GPTC_OK;
}

void kvb_destroy(kv_blocks *b) {
    free(b->free_ids);
    free(b->refs);
    memset(b, 0, sizeof *b);
}

int32_t kvb_alloc(kv_blocks *b) {
    if (b->n_free == 0) return -1;
    int32_t i = b->free_ids[--b->n_free];
    b->refs[i] = 1;
    return i;
}

void kvb_retain(kv_blocks *b, int32_t i) { b->refs[i]++; }

void kvb_release(kv_blocks *b, int32_t i) {
    if (--b->refs[i] == 0) b->free_ids[b->n_free++] = i;
}
