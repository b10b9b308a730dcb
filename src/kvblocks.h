/*
 * kvblocks.h - the batch engine's K/V cache bookkeeping: which blocks of
 * the backend's paged cache are free, and how many sequences hold each one
 * (a prompt's blocks are shared by the beams that continue it). The memory
 * itself belongs to the backend (kv_new); this is host-side integers only.
 */
#ifndef GPTC_KVBLOCKS_H
#define GPTC_KVBLOCKS_H

#include <stdint.h>

#include "gptc.h"

typedef struct {
    int32_t n_blocks, block_size, n_free;
    int32_t *free_ids; /* a stack of the free blocks */
    int32_t *refs;     /* holders of each block; 0 when free */
} kv_blocks;

gptc_status kvb_init(kv_blocks *b, int32_t n_blocks, int32_t block_size);
void kvb_destroy(kv_blocks *b);
/* A free block with one holder, or -1 when none is left. */
int32_t kvb_alloc(kv_blocks *b);
/* One more holder of block i. */
void kvb_retain(kv_blocks *b, int32_t i);
/* One holder fewer; the block is free again when none is left. */
void kvb_release(kv_blocks *b, int32_t i);

#endif
