/*
 * tokenizer.h - internals shared by the tokenizer's files (tokenizer.c,
 * bpe.c, unicode.c, detok.c). The rest of the library sees only gptc.h.
 *
 * The tokenizer is byte-level BPE as GPT-2 defines it: text is cut into
 * pieces by a regex, each piece's UTF-8 bytes become one symbol per byte, and
 * ranked merges join adjacent symbols until none applies.
 */
#ifndef GPTC_TOKENIZER_H
#define GPTC_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gptc.h"

/*
 * For tests: splits text (invalid UTF-8 replaced first) with the
 * pre-tokenizer regex alone, no added tokens, and returns the byte offset
 * where each piece ends in the replaced text. *ends is malloc'ed.
 */
gptc_status gptc_tokenizer_pieces(const gptc_tokenizer *tok, const char *text, size_t len,
                                  size_t **ends, size_t *n_ends);

/* ------------------------------------------------------------------ */
/* Unicode (unicode.c). */

/* An inclusive range of code points. */
typedef struct {
    uint32_t lo, hi;
} gptc_uni_range;

/*
 * The three character classes of GPT-2's pre-tokenizer regex, exactly as the
 * reference (Oniguruma inside Hugging Face tokenizers) evaluates them:
 * \p{L}, \p{N} and \s. Sorted, disjoint.
 */
extern const gptc_uni_range gptc_uni_letter[];
extern const size_t gptc_uni_n_letter;
extern const gptc_uni_range gptc_uni_number[];
extern const size_t gptc_uni_n_number;
extern const gptc_uni_range gptc_uni_space[];
extern const size_t gptc_uni_n_space;

/* 1 if `cp` is in the sorted range table. */
int gptc_uni_in(const gptc_uni_range *table, size_t n, uint32_t cp);

/* What gptc_utf8_next found at the start of a byte string. */
typedef enum {
    GPTC_UTF8_CHAR,       /* a complete, valid character */
    GPTC_UTF8_INVALID,    /* a maximal invalid subsequence: one U+FFFD */
    GPTC_UTF8_INCOMPLETE, /* a valid prefix cut off by the end of the input */
} gptc_utf8_kind;

/*
 * Classifies the bytes at s[0..n) (n >= 1) and sets *used to how many bytes
 * that unit spans. The units are those of Python's
 * bytes.decode("utf-8", errors="replace"): each maximal invalid subsequence
 * becomes one U+FFFD. Decoding treats INCOMPLETE as INVALID; the streaming
 * detokenizer waits for more bytes instead.
 */
gptc_utf8_kind gptc_utf8_next(const unsigned char *s, size_t n, size_t *used);

/* Decodes the valid character of `used` bytes at s. */
uint32_t gptc_utf8_decode(const unsigned char *s, size_t used);

/*
 * Copies s[0..n) with every maximal invalid subsequence replaced by U+FFFD
 * into a malloc'ed, NUL-terminated buffer.
 */
gptc_status gptc_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_len);

/* 1 if s[0..n) is valid UTF-8. */
int gptc_utf8_valid(const char *s, size_t n);

/* ------------------------------------------------------------------ */
/* BPE merging (bpe.c). */

/* (left id, right id) -> (rank, merged id), open addressing. */
typedef struct {
    uint64_t *keys; /* (left << 32 | right) + 1; 0 marks an empty slot */
    int32_t *ranks;
    int32_t *ids;
    size_t cap; /* a power of two */
    size_t count;
} gptc_pair_map;

gptc_status gptc_pair_map_init(gptc_pair_map *m, size_t expected);
void gptc_pair_map_free(gptc_pair_map *m);
/* Inserts or overwrites (a later merge with the same pair wins, as in the reference). */
gptc_status gptc_pair_map_put(gptc_pair_map *m, int32_t left, int32_t right, int32_t rank,
                              int32_t id);
/* 1 and the rank and merged id if the pair merges, else 0. */
int gptc_pair_map_get(const gptc_pair_map *m, int32_t left, int32_t right, int32_t *rank,
                      int32_t *id);

/* Scratch memory for gptc_bpe_merge, reused across the words of one call. */
typedef struct {
    size_t *prev, *next; /* linked list of live symbols; SIZE_MAX ends it */
    struct gptc_bpe_entry *heap;
    size_t cap, heap_cap;
} gptc_bpe_scratch;

void gptc_bpe_scratch_free(gptc_bpe_scratch *s);

/*
 * Applies the merges to the symbol ids ids[0..*n) in place; *n becomes the
 * number of tokens left. Same order of merges as the reference.
 */
gptc_status gptc_bpe_merge(const gptc_pair_map *merges, gptc_bpe_scratch *s, int32_t *ids,
                           size_t *n);

/* ------------------------------------------------------------------ */
/* A string -> int32 map (vocabulary, and the per-call word cache). */

typedef struct {
    char *pool; /* key bytes, back to back */
    size_t pool_len, pool_cap;
    size_t *key_off; /* per slot: offset of the key in pool, SIZE_MAX if empty */
    uint32_t *key_len;
    uint32_t *hashes;
    int32_t *values;
    size_t cap, count;
} gptc_str_map;

gptc_status gptc_str_map_init(gptc_str_map *m, size_t expected);
void gptc_str_map_free(gptc_str_map *m);
/* Forgets all keys, keeping the memory. */
void gptc_str_map_clear(gptc_str_map *m);
/* Inserts key -> value; *existed is set to 1 (and nothing changes) if the key was there. */
gptc_status gptc_str_map_put(gptc_str_map *m, const char *key, size_t len, int32_t value,
                             int *existed);
/* 1 and the value if present, else 0. */
int gptc_str_map_get(const gptc_str_map *m, const char *key, size_t len, int32_t *value);

#endif
