/*
 * bpe.c - the BPE merge loop and the two hash maps the tokenizer is built on.
 *
 * A word (one regex piece) starts as one symbol per byte. Every adjacent pair
 * that appears in the merge list is a candidate; the candidate with the lowest
 * rank (earliest line of merges.txt) is merged first, the leftmost among equal
 * ranks. Merging replaces two symbols by the merged token and makes new
 * candidates with its two neighbours. A min-heap of candidates keeps this
 * O(n log n) in the word length, so a megabyte-long run of letters is as safe
 * as a short word.
 *
 * The order is the reference's (tokenizers' Word::merge_all) to the letter,
 * including how it recognises stale heap entries: an entry is acted on when
 * the pair now at its position still merges into the entry's token. With a
 * consistent merge list this gives the same tokens as GPT-2's original
 * "merge every occurrence of the best pair" loop.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tokenizer.h"

/* ------------------------------------------------------------------ */
/* Pair map. */

static uint64_t mix64(uint64_t x) {
    /* splitmix64's finaliser: every input bit reaches every output bit. */
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
}

gptc_status gptc_pair_map_init(gptc_pair_map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->ranks = malloc(m->cap * sizeof *m->ranks);
    m->ids = malloc(m->cap * sizeof *m->ids);
    if (!m->keys || !m->ranks || !m->ids) {
        gptc_pair_map_free(m);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory for a merge table of %zu pairs", expected);
    }
    return GPTC_OK;
}

void gptc_pair_map_free(gptc_pair_map *m) {
    free(m->keys);
    free(m->ranks);
    free(m->ids);
    memset(m, 0, sizeof *m);
}

static size_t pair_slot(const gptc_pair_map *m, uint64_t key) {
    size_t mask = m->cap - 1, i = (size_t)mix64(key) & mask;
    while (m->keys[i] != 0 && m->keys[i] != key)
        i = (i + 1) & mask;
    return i;
}

gptc_status gptc_pair_map_put(gptc_pair_map *m, int32_t left, int32_t right, int32_t rank,
                              int32_t id) {
    if ((m->count + 1) * 2 > m->cap) {
        gptc_pair_map bigger;
        gptc_status st = gptc_pair_map_init(&bigger, m->cap);
        if (st != GPTC_OK) return st;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i]) continue;
            size_t j = pair_slot(&bigger, m->keys[i]);
            bigger.keys[j] = m->keys[i];
            bigger.ranks[j] = m->ranks[i];
            bigger.ids[j] = m->ids[i];
        }
        bigger.count = m->count;
        gptc_pair_map_free(m);
        *m = bigger;
    }
    uint64_t key = pair_key(left, right);
    size_t i = pair_slot(m, key);
    if (!m->keys[i]) m->count++;
    m->keys[i] = key;
    m->ranks[i] = rank;
    m->ids[i] = id;
    return GPTC_OK;
}

int gptc_pair_map_get(const gptc_pair_map *m, int32_t left, int32_t right, int32_t *rank,
                      int32_t *id) {
    size_t i = pair_slot(m, pair_key(left, right));
    if (!m->keys[i]) return 0;
    *rank = m->ranks[i];
    *id = m->ids[i];
    return 1;
}

/* ------------------------------------------------------------------ */
/* String map. */

static uint32_t hash_bytes(const char *s, size_t n) {
    /* FNV-1a: keys are short (tokens, words), so a byte loop is cheap enough. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static gptc_status str_map_alloc_slots(gptc_str_map *m, size_t cap) {
    m->cap = cap;
    m->key_off = malloc(cap * sizeof *m->key_off);
    m->key_len = malloc(cap * sizeof *m->key_len);
    m->hashes = malloc(cap * sizeof *m->hashes);
    m->values = malloc(cap * sizeof *m->values);
    if (!m->key_off || !m->key_len || !m->hashes || !m->values)
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory for a string table of %zu slots", cap);
    for (size_t i = 0; i < cap; i++)
        m->key_off[i] = SIZE_MAX;
    return GPTC_OK;
}

gptc_status gptc_str_map_init(gptc_str_map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    gptc_status st = str_map_alloc_slots(m, pow2_at_least(expected * 2 + 1));
    if (st != GPTC_OK) gptc_str_map_free(m);
    return st;
}

void gptc_str_map_free(gptc_str_map *m) {
    free(m->pool);
    free(m->key_off);
    free(m->key_len);
    free(m->hashes);
    free(m->values);
    memset(m, 0, sizeof *m);
}

void gptc_str_map_clear(gptc_str_map *m) {
    for (size_t i = 0; i < m->cap; i++)
        m->key_off[i] = SIZE_MAX;
    m->count = 0;
    m->pool_len = 0;
}

/* The slot holding the key, or the empty slot where it would go. */
static size_t str_slot(const gptc_str_map *m, const char *key, size_t len, uint32_t h) {
    size_t mask = m->cap - 1, i = h & mask;
    while (m->key_off[i] != SIZE_MAX) {
        if (m->hashes[i] == h && m->key_len[i] == len &&
            (len == 0 || memcmp(m->pool + m->key_off[i], key, len) == 0))
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static gptc_status str_map_grow(gptc_str_map *m) {
    gptc_str_map bigger = *m;
    gptc_status st = str_map_alloc_slots(&bigger, m->cap * 2);
    if (st != GPTC_OK) {
        free(bigger.key_off);
        free(bigger.key_len);
        free(bigger.hashes);
        free(bigger.values);
        return st;
    }
    size_t mask = bigger.cap - 1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->key_off[i] == SIZE_MAX) continue;
        size_t j = m->hashes[i] & mask;
        while (bigger.key_off[j] != SIZE_MAX)
            j = (j + 1) & mask;
        bigger.key_off[j] = m->key_off[i];
        bigger.key_len[j] = m->key_len[i];
        bigger.hashes[j] = m->hashes[i];
        bigger.values[j] = m->values[i];
    }
    free(m->key_off);
    free(m->key_len);
    free(m->hashes);
    free(m->values);
    *m = bigger;
    return GPTC_OK;
}

gptc_status gptc_str_map_put(gptc_str_map *m, const char *key, size_t len, int32_t value,
                             int *existed) {
    if (len > UINT32_MAX) return gptc_fail(GPTC_ERR_RANGE, "a key of %zu bytes is too long", len);
    uint32_t h = hash_bytes(key, len);
    size_t i = str_slot(m, key, len, h);
    *existed = m->key_off[i] != SIZE_MAX;
    if (*existed) return GPTC_OK;
    if (m->pool_len + len > m->pool_cap) {
        size_t cap = m->pool_cap ? m->pool_cap : 4096;
        while (cap < m->pool_len + len)
            cap *= 2;
        char *p = realloc(m->pool, cap);
        if (!p) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for %zu bytes of keys", cap);
        m->pool = p;
        m->pool_cap = cap;
    }
    if (len) memcpy(m->pool + m->pool_len, key, len);
    m->key_off[i] = m->pool_len;
    m->key_len[i] = (uint32_t)len;
    m->hashes[i] = h;
    m->values[i] = value;
    m->pool_len += len;
    m->count++;
    if (m->count * 2 > m->cap) return str_map_grow(m);
    return GPTC_OK;
}

int gptc_str_map_get(const gptc_str_map *m, const char *key, size_t len, int32_t *value) {
    if (len > UINT32_MAX) return 0;
    size_t i = str_slot(m, key, len, hash_bytes(key, len));
    if (m->key_off[i] == SIZE_MAX) return 0;
    *value = m->values[i];
    return 1;
}

/* ------------------------------------------------------------------ */
/* Merging. */

struct gptc_bpe_entry {
    int32_t rank;
    int32_t id; /* the token the pair merges into */
    size_t pos; /* index of the pair's left symbol */
};

static int entry_before(const struct gptc_bpe_entry *a, const struct gptc_bpe_entry *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct gptc_bpe_entry *heap, size_t *n, struct gptc_bpe_entry e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!entry_before(&e, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = e;
}

static struct gptc_bpe_entry heap_pop(struct gptc_bpe_entry *heap, size_t *n) {
    struct gptc_bpe_entry top = heap[0], last = heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && entry_before(&heap[child + 1], &heap[child])) child++;
        if (!entry_before(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n) heap[i] = last;
    return top;
}

void gptc_bpe_scratch_free(gptc_bpe_scratch *s) {
    free(s->prev);
    free(s->next);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static gptc_status scratch_reserve(gptc_bpe_scratch *s, size_t n) {
    if (n <= s->cap) return GPTC_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n)
        cap *= 2;
    /* Each merge pushes at most two candidates after the n - 1 initial ones. */
    size_t heap_cap = 3 * cap;
    size_t *prev = realloc(s->prev, cap * sizeof *prev);
    if (prev) s->prev = prev;
    size_t *next = realloc(s->next, cap * sizeof *next);
    if (next) s->next = next;
    struct gptc_bpe_entry *heap = realloc(s->heap, heap_cap * sizeof *heap);
    if (heap) s->heap = heap;
    if (!prev || !next || !heap)
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory merging a word of %zu bytes", n);
    s->cap = cap;
    s->heap_cap = heap_cap;
    return GPTC_OK;
}

gptc_status gptc_bpe_merge(const gptc_pair_map *merges, gptc_bpe_scratch *s, int32_t *ids,
                           size_t *n_io) {
    size_t n = *n_io;
    if (n < 2) return GPTC_OK;
    gptc_status st = scratch_reserve(s, n);
    if (st != GPTC_OK) return st;

    size_t *prev = s->prev, *next = s->next, n_heap = 0;
    struct gptc_bpe_entry *heap = s->heap;
    int32_t rank, id;
    for (size_t i = 0; i < n; i++) {
        prev[i] = i ? i - 1 : SIZE_MAX;
        next[i] = i + 1 < n ? i + 1 : SIZE_MAX;
        if (i + 1 < n && gptc_pair_map_get(merges, ids[i], ids[i + 1], &rank, &id))
            heap_push(heap, &n_heap, (struct gptc_bpe_entry){rank, id, i});
    }

    /* A merged-away symbol keeps its slot with id -1 (real ids are >= 0). */
    while (n_heap) {
        struct gptc_bpe_entry top = heap_pop(heap, &n_heap);
        size_t pos = top.pos, right = next[pos];
        if (ids[pos] < 0 || right == SIZE_MAX) continue;
        /* Stale entry: the pair at pos has changed since it was pushed. */
        if (!gptc_pair_map_get(merges, ids[pos], ids[right], &rank, &id) || id != top.id) continue;

        ids[pos] = top.id;
        ids[right] = -1;
        next[pos] = next[right];
        if (next[pos] != SIZE_MAX) prev[next[pos]] = pos;

        if (prev[pos] != SIZE_MAX &&
            gptc_pair_map_get(merges, ids[prev[pos]], ids[pos], &rank, &id))
            heap_push(heap, &n_heap, (struct gptc_bpe_entry){rank, id, prev[pos]});
        if (next[pos] != SIZE_MAX &&
            gptc_pair_map_get(merges, ids[pos], ids[next[pos]], &rank, &id))
            heap_push(heap, &n_heap, (struct gptc_bpe_entry){rank, id, pos});
    }

    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0) ids[k++] = ids[i];
    *n_io = k;
    return GPTC_OK;
}
