/*
 * tokenizer.c - GPT-2's byte-level BPE tokenizer: loading, encoding, decoding.
 *
 * Encoding, as Hugging Face tokenizers does it for GPT2TokenizerFast:
 *   1. invalid UTF-8 becomes U+FFFD (the reference only ever sees a str);
 *   2. added tokens such as "<|endoftext|>" are cut out of the text first, and
 *      map straight to their ids;
 *   3. each stretch between them is split into pieces by GPT-2's regex
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (run by PCRE2, with the classes spelled out from unicode.c's tables);
 *   4. each piece's bytes become one symbol per byte and bpe.c merges them.
 * Decoding concatenates the tokens' bytes and replaces invalid UTF-8.
 *
 * The loader accepts vocab.json + merges.txt (the files GPT2Tokenizer reads)
 * or a tokenizer.json of a byte-level BPE model, and rejects what it cannot
 * reproduce exactly (a normalizer, another pre-tokenizer, ...) as unsupported
 * rather than tokenizing differently from the reference.
 *
 * A loaded tokenizer is never written to again, so one may encode from many
 * threads at once: each call has its own match data, scratch and word cache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>

#include "internal.h"
#include "tokenizer.h"

/*
 * The byte <-> unicode map (bytes_to_unicode in GPT-2's encoder.py).
 *
 * GPT-2's BPE runs on bytes, but its vocabulary and merges are stored as
 * text (JSON keys, lines of merges.txt), where bytes such as 0x00, "\n", " "
 * or a lone 0xE2 cannot be written or would be mangled. So every byte value is
 * given a stand-in character that is printable and not whitespace:
 *   - the 188 bytes that already are such Latin-1 characters ('!'..'~',
 *     U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves;
 *   - the other 68 (controls, space, DEL, U+00A0 no-break space, U+00AD soft
 *     hyphen, ...) get U+0100, U+0101, ... in increasing byte order.
 * Space (0x20) is the 33rd of those, hence U+0120 "Ġ", and "\n" is U+010A
 * "Ċ": the vocabulary's token " the" is written "Ġthe".
 *
 * gptc never builds these strings while encoding: each byte's stand-in is
 * looked up in the vocabulary once (byte_id), merges are kept as pairs of
 * ids, and a token's stand-ins are turned back into raw bytes at load time.
 */
#define N_STAND_IN 0x144 /* stand-ins are U+0021..U+0143 */

static void byte_level_tables(uint32_t byte_to_cp[256], int16_t cp_to_byte[N_STAND_IN]) {
    uint32_t extra = 0x100;
    for (int i = 0; i < N_STAND_IN; i++)
        cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        byte_to_cp[b] = printable ? (uint32_t)b : extra++;
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
}

static size_t utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Raw bytes of a token written in stand-ins; out needs room for len bytes.
 * A token with any character outside the stand-in alphabet (an added token
 * such as "<pad> x", or a vocabulary that is not byte-level) is taken as its
 * own UTF-8 text, as the reference's ByteLevel decoder does.
 */
static size_t token_text_to_bytes(const int16_t cp_to_byte[N_STAND_IN], const char *text,
                                  size_t len, char *out) {
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0, k = 0, used;
    while (i < len) {
        if (gptc_utf8_next(u + i, len - i, &used) != GPTC_UTF8_CHAR) break;
        uint32_t cp = gptc_utf8_decode(u + i, used);
        if (cp >= N_STAND_IN || cp_to_byte[cp] < 0) break;
        out[k++] = (char)cp_to_byte[cp];
        i += used;
    }
    if (i == len) return k;
    memcpy(out, text, len);
    return len;
}

/* ------------------------------------------------------------------ */

typedef struct {
    char *text; /* as written in the file */
    size_t len;
    int32_t id;
    int lstrip, rstrip; /* swallow whitespace on that side */
    int normalized;     /* matched in the second pass (see split_added) */
} added_token;

struct gptc_tokenizer {
    int32_t n_vocab; /* ids are 0..n_vocab-1, every one used */
    int32_t eos_id;
    char *bytes;         /* raw bytes of every token, back to back */
    size_t *bytes_off;   /* [n_vocab] */
    uint32_t *bytes_len; /* [n_vocab] */
    gptc_str_map vocab;  /* model vocabulary: token text (stand-ins) -> id */
    gptc_pair_map merges;
    int32_t byte_id[256]; /* id of each byte's one-symbol token, -1 if absent */
    int32_t unk_id;       /* replaces a byte with no token; -1: drop it */
    int fuse_unk;         /* consecutive unknowns make one unk token */
    int ignore_merges;    /* a piece found whole in the vocabulary skips BPE */
    added_token *added;
    size_t n_added;
    unsigned char added_first[2][256]; /* some added token of that pass starts with the byte */
    uint32_t byte_to_cp[256];
    int16_t cp_to_byte[N_STAND_IN];
    pcre2_code *re;
};

static gptc_tokenizer *tok_new(void) {
    gptc_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return NULL;
    tok->eos_id = -1;
    tok->unk_id = -1;
    byte_level_tables(tok->byte_to_cp, tok->cp_to_byte);
    return tok;
}

void gptc_tokenizer_free(gptc_tokenizer *tok) {
    if (!tok) return;
    free(tok->bytes);
    free(tok->bytes_off);
    free(tok->bytes_len);
    gptc_str_map_free(&tok->vocab);
    gptc_pair_map_free(&tok->merges);
    for (size_t i = 0; i < tok->n_added; i++)
        free(tok->added[i].text);
    free(tok->added);
    pcre2_code_free(tok->re);
    free(tok);
}

int32_t gptc_tokenizer_n_vocab(const gptc_tokenizer *tok) { return tok ? tok->n_vocab : 0; }

int32_t gptc_tokenizer_eos_id(const gptc_tokenizer *tok) { return tok ? tok->eos_id : -1; }

const char *gptc_tokenizer_token_bytes(const gptc_tokenizer *tok, int32_t id, size_t *len) {
    if (!tok || id < 0 || id >= tok->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = tok->bytes_len[id];
    return tok->bytes + tok->bytes_off[id];
}

/* ------------------------------------------------------------------ */
/* Loading. */


/* A JSON number that is a whole id in [0, INT32_MAX). */
static int json_id(const cJSON *item, int32_t *id) {
    if (!cJSON_IsNumber(item)) return 0;
    double d = item->valuedouble;
    if (!(d >= 0 && d < (double)INT32_MAX) || d != (double)(int32_t)d) return 0;
    *id = (int32_t)d;
    return 1;
}

/* Reads the {"token": id, ...} object into tok->vocab; `field` names it in messages, NULL for
 * vocab.json. */
static gptc_status load_vocab(gptc_tokenizer *tok, const cJSON *obj, const char *file,
                              const char *field) {
    const char *in = field ? field : "", *sep = field ? ": " : "";
    if (!cJSON_IsObject(obj))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: %s is not a JSON object", file,
                         field ? field : "the vocabulary");
    gptc_status st = gptc_str_map_init(&tok->vocab, (size_t)cJSON_GetArraySize(obj));
    if (st != GPTC_OK) return st;
    for (const cJSON *e = obj->child; e; e = e->next) {
        int32_t id;
        if (!json_id(e, &id))
            return gptc_fail(GPTC_ERR_FORMAT,
                             "%s: %s%sthe id of token \"%.40s\" is not an integer in [0, 2^31-1)",
                             file, in, sep, e->string);
        int existed;
        st = gptc_str_map_put(&tok->vocab, e->string, strlen(e->string), id, &existed);
        if (st != GPTC_OK) return st;
        if (existed)
            return gptc_fail(GPTC_ERR_FORMAT, "%s: %s%stoken \"%.40s\" appears twice", file, in,
                             sep, e->string);
    }
    return GPTC_OK;
}

/* Reads tokenizer.json's "added_tokens" list into tok->added. */
static gptc_status load_added(gptc_tokenizer *tok, const cJSON *arr, const char *file) {
    if (!arr || cJSON_IsNull(arr)) return GPTC_OK;
    if (!cJSON_IsArray(arr))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: added_tokens is not a list", file);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added)
        return gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory for %zu added tokens", file, n);
    size_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        int32_t id;
        if (!json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id))
            return gptc_fail(GPTC_ERR_FORMAT, "%s: added_tokens[%zu].id is not an integer in range",
                             file, i);
        if (!cJSON_IsString(content) || !content->valuestring[0])
            return gptc_fail(GPTC_ERR_FORMAT,
                             "%s: added_tokens[%zu].content is not a non-empty string", file, i);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word")))
            return gptc_fail(GPTC_ERR_UNSUPPORTED,
                             "%s: added_tokens[%zu] (\"%.40s\"): single_word is not supported",
                             file, i, content->valuestring);
        added_token *a = &tok->added[tok->n_added];
        a->len = strlen(content->valuestring);
        a->text = malloc(a->len + 1);
        if (!a->text) return gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory for added tokens", file);
        memcpy(a->text, content->valuestring, a->len + 1);
        a->id = id;
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        /* The reference's default is "normalized = !special". */
        const cJSON *norm = cJSON_GetObjectItemCaseSensitive(e, "normalized");
        a->normalized = cJSON_IsBool(norm)
                            ? cJSON_IsTrue(norm)
                            : !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        tok->n_added++;
        for (size_t j = 0; j + 1 < tok->n_added; j++)
            if (tok->added[j].len == a->len && memcmp(tok->added[j].text, a->text, a->len) == 0)
                return gptc_fail(GPTC_ERR_FORMAT, "%s: added token \"%.40s\" appears twice", file,
                                 a->text);
    }
    return GPTC_OK;
}

/*
 * Numbers the tokens: ids must cover 0..n-1 exactly once, where n counts the
 * vocabulary plus the added tokens that are not in it. Builds the id -> bytes
 * table.
 */
static gptc_status assign_ids(gptc_tokenizer *tok, const char *vocab_file, const char *added_file) {
    size_t n = tok->vocab.count, text_bytes = tok->vocab.pool_len;
    for (size_t i = 0; i < tok->n_added; i++) {
        int32_t id;
        if (gptc_str_map_get(&tok->vocab, tok->added[i].text, tok->added[i].len, &id)) {
            if (id != tok->added[i].id)
                return gptc_fail(GPTC_ERR_FORMAT,
                                 "%s: added token \"%.40s\" has id %d but the vocabulary says %d",
                                 added_file, tok->added[i].text, tok->added[i].id, id);
        } else {
            n++;
            text_bytes += tok->added[i].len;
        }
    }
    if (n == 0) return gptc_fail(GPTC_ERR_FORMAT, "%s: the vocabulary is empty", vocab_file);
    if (n > INT32_MAX) return gptc_fail(GPTC_ERR_RANGE, "%s: too many tokens (%zu)", vocab_file, n);
    tok->n_vocab = (int32_t)n;
    tok->bytes = malloc(text_bytes ? text_bytes : 1);
    tok->bytes_off = malloc(n * sizeof *tok->bytes_off);
    tok->bytes_len = malloc(n * sizeof *tok->bytes_len);
    if (!tok->bytes || !tok->bytes_off || !tok->bytes_len)
        return gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory for %zu tokens", vocab_file, n);
    for (size_t i = 0; i < n; i++)
        tok->bytes_off[i] = SIZE_MAX;

    size_t pos = 0;
    const gptc_str_map *v = &tok->vocab;
    for (size_t s = 0; s < v->cap + tok->n_added; s++) {
        const char *text, *file;
        size_t len;
        int32_t id;
        if (s < v->cap) {
            if (v->key_off[s] == SIZE_MAX) continue;
            /* A vocabulary of empty strings never allocates its pool. */
            text = v->pool ? v->pool + v->key_off[s] : "";
            len = v->key_len[s];
            id = v->values[s];
            file = vocab_file;
        } else {
            const added_token *a = &tok->added[s - v->cap];
            if (gptc_str_map_get(v, a->text, a->len, &id)) continue; /* numbered above */
            text = a->text;
            len = a->len;
            id = a->id;
            file = added_file;
        }
        if (id >= tok->n_vocab)
            return gptc_fail(GPTC_ERR_FORMAT, "%s: id %d of token \"%.*s\" is out of range [0, %d)",
                             file, id, (int)(len < 40 ? len : 40), text, tok->n_vocab);
        if (tok->bytes_off[id] != SIZE_MAX)
            return gptc_fail(GPTC_ERR_FORMAT, "%s: id %d is given to two tokens (one is \"%.*s\")",
                             file, id, (int)(len < 40 ? len : 40), text);
        tok->bytes_off[id] = pos;
        tok->bytes_len[id] =
            (uint32_t)token_text_to_bytes(tok->cp_to_byte, text, len, tok->bytes + pos);
        pos += tok->bytes_len[id];
    }
    return GPTC_OK;
}

/*
 * Records merge number `rank`: tokens a and b join into token a+b. `unit` and
 * `index` locate it in `file` for messages ("line", 12 or "merge", 11).
 */
static gptc_status add_merge(gptc_tokenizer *tok, const char *a, size_t alen, const char *b,
                             size_t blen, int32_t rank, char **buf, size_t *buf_cap,
                             const char *file, const char *unit, size_t index) {
    int32_t ia, ib, ij;
    if (!gptc_str_map_get(&tok->vocab, a, alen, &ia))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: %s %zu: token \"%.*s\" is not in the vocabulary",
                         file, unit, index, (int)(alen < 40 ? alen : 40), a);
    if (!gptc_str_map_get(&tok->vocab, b, blen, &ib))
        return gptc_fail(GPTC_ERR_FORMAT, "%s: %s %zu: token \"%.*s\" is not in the vocabulary",
                         file, unit, index, (int)(blen < 40 ? blen : 40), b);
    if (alen + blen > *buf_cap) {
        size_t cap = 2 * (alen + blen);
        char *p = realloc(*buf, cap);
        if (!p) return gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory", file);
        *buf = p;
        *buf_cap = cap;
    }
    memcpy(*buf, a, alen);
    memcpy(*buf + alen, b, blen);
    if (!gptc_str_map_get(&tok->vocab, *buf, alen + blen, &ij))
        return gptc_fail(GPTC_ERR_FORMAT,
                         "%s: %s %zu: merged token \"%.*s\" is not in the vocabulary", file, unit,
                         index, (int)(alen + blen < 40 ? alen + blen : 40), *buf);
    return gptc_pair_map_put(&tok->merges, ia, ib, rank, ij);
}

static gptc_status load_merges_txt(gptc_tokenizer *tok, const char *path) {
    char *text = NULL, *buf = NULL;
    size_t len = 0, buf_cap = 0;
    gptc_status st = gptc_read_file(path, &text, &len);
    if (st != GPTC_OK) return st;
    size_t n_lines = 1;
    for (size_t i = 0; i < len; i++)
        n_lines += text[i] == '\n';
    st = gptc_pair_map_init(&tok->merges, n_lines);
    if (st != GPTC_OK) goto cleanup;

    int32_t rank = 0;
    size_t line_no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - line) : len - pos;
        pos += line_len + (nl != NULL);
        line_no++;
        if (line_len && line[line_len - 1] == '\r') line_len--;
        if (line_len >= 8 && memcmp(line, "#version", 8) == 0) continue;
        /* Exactly one space, as the reference requires. */
        const char *sp = memchr(line, ' ', line_len);
        if (!sp || sp == line || sp == line + line_len - 1 ||
            memchr(sp + 1, ' ', (size_t)(line + line_len - sp - 1))) {
            st = gptc_fail(GPTC_ERR_FORMAT,
                           "%s: line %zu: expected two tokens separated by one space", path,
                           line_no);
            goto cleanup;
        }
        if (rank == INT32_MAX) {
            st = gptc_fail(GPTC_ERR_RANGE, "%s: too many merges", path);
            goto cleanup;
        }
        st = add_merge(tok, line, (size_t)(sp - line), sp + 1, (size_t)(line + line_len - sp - 1),
                       rank++, &buf, &buf_cap, path, "line", line_no);
        if (st != GPTC_OK) goto cleanup;
    }
cleanup:
    free(text);
    free(buf);
    return st;
}

/* 1 if `item` is absent, null, or the given string. */
static int json_absent_or_string(const cJSON *item, const char *s) {
    return !item || cJSON_IsNull(item) ||
           (cJSON_IsString(item) && strcmp(item->valuestring, s) == 0);
}

/*
 * Checks that tokenizer.json describes what gptc reproduces: a byte-level BPE
 * with no normalizer and GPT-2's pre-tokenizer. Anything else would tokenize
 * differently, so it is refused rather than approximated.
 */
static gptc_status check_pipeline(gptc_tokenizer *tok, const cJSON *root, const cJSON *model,
                                  const char *path) {
    if (!json_absent_or_string(cJSON_GetObjectItemCaseSensitive(model, "type"), "BPE"))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: model.type is not \"BPE\"", path);
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: a normalizer is not supported (GPT-2 has none)",
                         path);
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *pre_type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsString(pre_type) || strcmp(pre_type->valuestring, "ByteLevel") != 0)
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: pre_tokenizer must be ByteLevel", path);
    /* ByteLevel's defaults are add_prefix_space = true and use_regex = true. */
    if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space")))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: pre_tokenizer.add_prefix_space must be false",
                         path);
    if (cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(pre, "use_regex")))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: pre_tokenizer.use_regex must be true", path);

    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: model.dropout is not supported", path);
    if (!json_absent_or_string(cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix"),
                               ""))
        return gptc_fail(GPTC_ERR_UNSUPPORTED,
                         "%s: model.continuing_subword_prefix is not supported", path);
    if (!json_absent_or_string(cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix"), ""))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: model.end_of_word_suffix is not supported",
                         path);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "%s: model.byte_fallback is not supported", path);
    tok->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    tok->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    return GPTC_OK;
}

static gptc_status load_tokenizer_json(gptc_tokenizer *tok, const char *path) {
    cJSON *root = NULL;
    char *buf = NULL;
    size_t buf_cap = 0;
    gptc_status st = gptc_read_json(path, &root);
    if (st != GPTC_OK) return st;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: \"model\" is missing or not an object", path);
        goto cleanup;
    }
    if ((st = check_pipeline(tok, root, model, path)) != GPTC_OK) goto cleanup;
    if ((st = load_vocab(tok, cJSON_GetObjectItemCaseSensitive(model, "vocab"), path,
                         "model.vocab")) != GPTC_OK)
        goto cleanup;
    if ((st = load_added(tok, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), path)) !=
        GPTC_OK)
        goto cleanup;
    if ((st = assign_ids(tok, path, path)) != GPTC_OK) goto cleanup;

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk) &&
        !gptc_str_map_get(&tok->vocab, unk->valuestring, strlen(unk->valuestring), &tok->unk_id)) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: model.unk_token \"%.40s\" is not in the vocabulary",
                       path, unk->valuestring);
        goto cleanup;
    }

    /* Merges are "a b" strings in older files and ["a", "b"] pairs in newer ones. */
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) {
        st = gptc_fail(GPTC_ERR_FORMAT, "%s: model.merges is missing or not a list", path);
        goto cleanup;
    }
    if ((st = gptc_pair_map_init(&tok->merges, (size_t)cJSON_GetArraySize(merges))) != GPTC_OK)
        goto cleanup;
    int32_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (sp) {
                a = m->valuestring;
                alen = (size_t)(sp - a);
                b = sp + 1;
                blen = strlen(b);
            }
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            alen = strlen(a);
            b = m->child->next->valuestring;
            blen = strlen(b);
        }
        if (!a || !alen || !blen) {
            st = gptc_fail(GPTC_ERR_FORMAT,
                           "%s: model.merges entry %d is neither \"a b\" nor [\"a\", \"b\"]", path,
                           rank);
            goto cleanup;
        }
        st = add_merge(tok, a, alen, b, blen, rank, &buf, &buf_cap, path, "model.merges entry",
                       (size_t)rank);
        if (st != GPTC_OK) goto cleanup;
        if (rank == INT32_MAX - 1) {
            st = gptc_fail(GPTC_ERR_RANGE, "%s: too many merges", path);
            goto cleanup;
        }
    }
cleanup:
    free(buf);
    cJSON_Delete(root);
    return st;
}

static gptc_status load_vocab_json(gptc_tokenizer *tok, const char *path) {
    cJSON *root = NULL;
    gptc_status st = gptc_read_json(path, &root);
    if (st != GPTC_OK) return st;
    if ((st = load_vocab(tok, root, path, NULL)) != GPTC_OK) goto cleanup;
    /*
     * GPT2TokenizerFast built from these two files makes "<|endoftext|>" (its
     * bos, eos and unk token) a special added token: written in the text, it
     * is that one id, never BPE'd as "<", "|", "end"...
     */
    static const char eot[] = "<|endoftext|>";
    int32_t id;
    if (gptc_str_map_get(&tok->vocab, eot, sizeof eot - 1, &id)) {
        tok->added = calloc(1, sizeof *tok->added);
        if (!tok->added || !(tok->added[0].text = malloc(sizeof eot))) {
            st = gptc_fail(GPTC_ERR_NOMEM, "%s: out of memory", path);
            goto cleanup;
        }
        memcpy(tok->added[0].text, eot, sizeof eot);
        tok->added[0].len = sizeof eot - 1;
        tok->added[0].id = id;
        tok->n_added = 1;
    }
    st = assign_ids(tok, path, path);
cleanup:
    cJSON_Delete(root);
    return st;
}

/* Appends `s` to a growing string; *ok turns 0 when memory runs out. */
static void buf_add(char **buf, size_t *len, size_t *cap, const char *s, int *ok) {
    size_t n = strlen(s);
    if (!*ok) return;
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1)
            c *= 2;
        char *p = realloc(*buf, c);
        if (!p) {
            *ok = 0;
            return;
        }
        *buf = p;
        *cap = c;
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

static void buf_add_class(char **buf, size_t *len, size_t *cap, const gptc_uni_range *t, size_t n,
                          int *ok) {
    char item[48];
    for (size_t i = 0; i < n; i++) {
        if (t[i].lo == t[i].hi)
            snprintf(item, sizeof item, "\\x{%X}", (unsigned)t[i].lo);
        else
            snprintf(item, sizeof item, "\\x{%X}-\\x{%X}", (unsigned)t[i].lo, (unsigned)t[i].hi);
        buf_add(buf, len, cap, item, ok);
    }
}

/*
 * GPT-2's regex with \p{L}, \p{N} and \s written out as explicit classes from
 * unicode.c, so the system PCRE2's Unicode version does not matter:
 *   's|'t|'re|'ve|'m|'ll|'d| ?[L]+| ?[N]+| ?[^SLN]+|[S]+(?![^S])|[S]+
 * (?!\S) is written (?![^S]): "not followed by a non-space".
 */
static gptc_status compile_regex(gptc_tokenizer *tok) {
    char *p = NULL;
    size_t len = 0, cap = 0;
    int ok = 1;
#define ADD(s) buf_add(&p, &len, &cap, (s), &ok)
#define CLASS(t) buf_add_class(&p, &len, &cap, gptc_uni_##t, gptc_uni_n_##t, &ok)
    ADD("'s|'t|'re|'ve|'m|'ll|'d| ?[");
    CLASS(letter);
    ADD("]+| ?[");
    CLASS(number);
    ADD("]+| ?[^");
    CLASS(space);
    CLASS(letter);
    CLASS(number);
    ADD("]+|[");
    CLASS(space);
    ADD("]+(?![^");
    CLASS(space);
    ADD("])|[");
    CLASS(space);
    ADD("]+");
#undef ADD
#undef CLASS
    if (!ok) {
        free(p);
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory building the pre-tokenizer regex");
    }
    int err;
    PCRE2_SIZE err_off;
    tok->re = pcre2_compile((PCRE2_SPTR)p, len, PCRE2_UTF | PCRE2_UCP, &err, &err_off, NULL);
    free(p);
    if (!tok->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return gptc_fail(GPTC_ERR_UNSUPPORTED, "PCRE2 cannot compile the pre-tokenizer regex: %s",
                         (char *)msg);
    }
    /* Without JIT (not built in, or no executable memory) the interpreter gives the same matches.
     */
    pcre2_jit_compile(tok->re, PCRE2_JIT_COMPLETE);
    return GPTC_OK;
}

/* What both loaders share once ids and merges are in place. */
static gptc_status finish(gptc_tokenizer *tok) {
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = utf8_put(s, tok->byte_to_cp[b]);
        if (!gptc_str_map_get(&tok->vocab, s, n, &tok->byte_id[b])) tok->byte_id[b] = -1;
    }
    static const char eot[] = "<|endoftext|>";
    if (!gptc_str_map_get(&tok->vocab, eot, sizeof eot - 1, &tok->eos_id)) tok->eos_id = -1;
    for (size_t i = 0; i < tok->n_added; i++) {
        const added_token *a = &tok->added[i];
        if (a->len == sizeof eot - 1 && memcmp(a->text, eot, a->len) == 0) tok->eos_id = a->id;
        tok->added_first[a->normalized][(unsigned char)a->text[0]] = 1;
    }
    return compile_regex(tok);
}

gptc_status gptc_tokenizer_load_files(const char *vocab_json, const char *merges_txt,
                                      gptc_tokenizer **out) {
    if (!out) return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_load_files: out is NULL");
    *out = NULL;
    if (!vocab_json || !merges_txt)
        return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_load_files: %s path is NULL",
                         vocab_json ? "merges_txt" : "vocab_json");
    gptc_tokenizer *tok = tok_new();
    if (!tok) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for a tokenizer");
    gptc_status st = load_vocab_json(tok, vocab_json);
    if (st == GPTC_OK) st = load_merges_txt(tok, merges_txt);
    if (st == GPTC_OK) st = finish(tok);
    if (st != GPTC_OK) {
        gptc_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return GPTC_OK;
}

gptc_status gptc_tokenizer_load(const char *dir, gptc_tokenizer **out) {
    if (!out) return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_load: out is NULL");
    *out = NULL;
    if (!dir) return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_load: dir is NULL");
    gptc_status st = GPTC_OK;
    gptc_tokenizer *tok = NULL;
    char *vocab = gptc_path_join(dir, "vocab.json");
    char *merges = gptc_path_join(dir, "merges.txt");
    char *json = gptc_path_join(dir, "tokenizer.json");
    if (!vocab || !merges || !json) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory");
        goto cleanup;
    }
    if (gptc_file_exists(vocab) && gptc_file_exists(merges)) {
        st = gptc_tokenizer_load_files(vocab, merges, out);
        goto cleanup;
    }
    if (!gptc_file_exists(json)) {
        st = gptc_fail(
            GPTC_ERR_IO,
            "%s: no tokenizer found (looked for vocab.json + merges.txt, and tokenizer.json)", dir);
        goto cleanup;
    }
    if (!(tok = tok_new())) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory for a tokenizer");
        goto cleanup;
    }
    st = load_tokenizer_json(tok, json);
    if (st == GPTC_OK) st = finish(tok);
    if (st == GPTC_OK) {
        *out = tok;
        tok = NULL;
    }
cleanup:
    gptc_tokenizer_free(tok);
    free(vocab);
    free(merges);
    free(json);
    return st;
}

/* ------------------------------------------------------------------ */
/* Encoding. */

/* Words longer than this are not cached: they rarely repeat. */
#define CACHE_MAX_WORD 64
/* The cache starts afresh when it holds this many words. */
#define CACHE_MAX_ENTRIES 65536

typedef struct {
    const gptc_tokenizer *tok;
    int32_t *ids; /* the result */
    size_t n_ids, cap_ids;
    pcre2_match_data *md;
    gptc_str_map cache; /* word bytes -> index into spans */
    struct {
        size_t off;
        size_t n;
    } * spans; /* a cached word's ids in cache_ids */
    size_t n_spans;
    int32_t *cache_ids;
    size_t n_cache_ids, cap_cache_ids;
    int32_t *word; /* the symbols of the word being merged */
    size_t cap_word;
    char *whole; /* a word in stand-ins, for ignore_merges */
    size_t cap_whole;
    gptc_bpe_scratch bpe;
    const char *base; /* with ends != NULL: record piece ends instead of encoding */
    size_t *ends;
    size_t n_ends, cap_ends;
} encoder;

/* Makes room for `need` items; always allocates, so that pointer arithmetic on *p is defined. */
static gptc_status grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (*p && need <= *cap) return GPTC_OK;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return gptc_fail(GPTC_ERR_NOMEM, "out of memory encoding text (%zu items)", need);
    *p = q;
    *cap = c;
    return GPTC_OK;
}

static gptc_status push_ids(encoder *e, const int32_t *ids, size_t n) {
    gptc_status st = grow((void **)&e->ids, &e->cap_ids, e->n_ids + n, sizeof *e->ids);
    if (st != GPTC_OK) return st;
    memcpy(e->ids + e->n_ids, ids, n * sizeof *ids);
    e->n_ids += n;
    return GPTC_OK;
}

static gptc_status cache_put(encoder *e, const char *s, size_t len, const int32_t *ids, size_t n) {
    if (e->n_spans == CACHE_MAX_ENTRIES) {
        gptc_str_map_clear(&e->cache);
        e->n_spans = 0;
        e->n_cache_ids = 0;
    }
    gptc_status st =
        grow((void **)&e->cache_ids, &e->cap_cache_ids, e->n_cache_ids + n, sizeof *e->cache_ids);
    if (st != GPTC_OK) return st;
    if (!e->spans && !(e->spans = malloc(CACHE_MAX_ENTRIES * sizeof *e->spans)))
        return gptc_fail(GPTC_ERR_NOMEM, "out of memory for the word cache");
    int existed;
    st = gptc_str_map_put(&e->cache, s, len, (int32_t)e->n_spans, &existed);
    if (st != GPTC_OK || existed) return st;
    memcpy(e->cache_ids + e->n_cache_ids, ids, n * sizeof *ids);
    e->spans[e->n_spans].off = e->n_cache_ids;
    e->spans[e->n_spans].n = n;
    e->n_spans++;
    e->n_cache_ids += n;
    return GPTC_OK;
}

/* BPE on one regex piece. */
static gptc_status encode_piece(encoder *e, const char *s, size_t len) {
    const gptc_tokenizer *tok = e->tok;
    gptc_status st;
    int32_t v;
    if (e->base) {
        if ((st = grow((void **)&e->ends, &e->cap_ends, e->n_ends + 1, sizeof *e->ends)) != GPTC_OK)
            return st;
        e->ends[e->n_ends++] = (size_t)(s + len - e->base);
        return GPTC_OK;
    }
    if (len <= CACHE_MAX_WORD && gptc_str_map_get(&e->cache, s, len, &v))
        return push_ids(e, e->cache_ids + e->spans[v].off, e->spans[v].n);

    if (tok->ignore_merges) {
        if ((st = grow((void **)&e->whole, &e->cap_whole, 2 * len, 1)) != GPTC_OK) return st;
        size_t n = 0;
        for (size_t i = 0; i < len; i++)
            n += utf8_put(e->whole + n, tok->byte_to_cp[(unsigned char)s[i]]);
        if (gptc_str_map_get(&tok->vocab, e->whole, n, &v)) return push_ids(e, &v, 1);
    }

    if ((st = grow((void **)&e->word, &e->cap_word, len, sizeof *e->word)) != GPTC_OK) return st;
    size_t n = 0;
    int prev_unknown = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = tok->byte_id[(unsigned char)s[i]];
        if (id < 0) {
            /* As the reference: without an unk token an unknown byte is dropped. */
            if (tok->unk_id < 0 || (tok->fuse_unk && prev_unknown)) continue;
            id = tok->unk_id;
            prev_unknown = 1;
        } else {
            prev_unknown = 0;
        }
        e->word[n++] = id;
    }
    if ((st = gptc_bpe_merge(&tok->merges, &e->bpe, e->word, &n)) != GPTC_OK) return st;
    if ((st = push_ids(e, e->word, n)) != GPTC_OK) return st;
    return len <= CACHE_MAX_WORD ? cache_put(e, s, len, e->word, n) : GPTC_OK;
}

/* Splits a stretch without added tokens into regex pieces. */
static gptc_status encode_ordinary(encoder *e, const char *s, size_t len) {
    size_t off = 0;
    gptc_status st = GPTC_OK;
    while (off < len && st == GPTC_OK) {
        int rc = pcre2_match(e->tok->re, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) return encode_piece(e, s + off, len - off);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return gptc_fail(GPTC_ERR_UNSUPPORTED, "pre-tokenizer regex failed at byte %zu: %s",
                             off, (char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        /* Every character matches some branch, so there are no gaps; kept for safety. */
        if (ov[0] > off && (st = encode_piece(e, s + off, ov[0] - off)) != GPTC_OK) return st;
        if (ov[1] <= ov[0])
            return gptc_fail(GPTC_ERR_UNSUPPORTED,
                             "pre-tokenizer regex matched nothing at byte %zu", off);
        st = encode_piece(e, s + ov[0], ov[1] - ov[0]);
        off = ov[1];
    }
    return st;
}

static int is_space_at(const char *s, size_t len, size_t i, size_t *used) {
    gptc_utf8_next((const unsigned char *)s + i, len - i, used);
    return gptc_uni_in(gptc_uni_space, gptc_uni_n_space,
                       gptc_utf8_decode((const unsigned char *)s + i, *used));
}

/*
 * Cuts added tokens out of s[0..len). As in the reference, tokens with
 * normalized = false are found first (pass 0), then those with normalized =
 * true in what is left (pass 1; with no normalizer the text is the same);
 * the leftmost match wins, the longest among those starting there. lstrip
 * and rstrip tokens take the whitespace (Unicode White_Space) beside them.
 */
static gptc_status split_added(encoder *e, const char *s, size_t len, int pass) {
    if (pass == 2) return encode_ordinary(e, s, len);
    const gptc_tokenizer *tok = e->tok;
    gptc_status st;
    size_t start = 0; /* where the stretch not yet handed on begins */
    for (size_t i = 0; i < len;) {
        const added_token *best = NULL;
        if (tok->added_first[pass][(unsigned char)s[i]]) {
            for (size_t k = 0; k < tok->n_added; k++) {
                const added_token *a = &tok->added[k];
                if (a->normalized == pass && a->len <= len - i && (!best || a->len > best->len) &&
                    memcmp(s + i, a->text, a->len) == 0)
                    best = a;
            }
        }
        if (!best) {
            i++;
            continue;
        }
        size_t m_start = i, m_stop = i + best->len, used;
        if (best->lstrip) {
            while (m_start > start) {
                size_t c = m_start - 1;
                while (c > start && ((unsigned char)s[c] & 0xC0) == 0x80)
                    c--;
                if (!is_space_at(s, len, c, &used)) break;
                m_start = c;
            }
        }
        if (best->rstrip)
            while (m_stop < len && is_space_at(s, len, m_stop, &used))
                m_stop += used;
        if ((st = split_added(e, s + start, m_start - start, pass + 1)) != GPTC_OK) return st;
        if ((st = push_ids(e, &best->id, 1)) != GPTC_OK) return st;
        start = i = m_stop;
    }
    return split_added(e, s + start, len - start, pass + 1);
}

/*
 * Runs the whole pipeline on valid or invalid UTF-8. With `ends` non-NULL it
 * stops after the regex and returns where each piece ends instead (added
 * tokens are not cut out then): the differential test compares those with
 * the reference's pre-tokenizer.
 */
static gptc_status run_encoder(const gptc_tokenizer *tok, const char *text, size_t len,
                               int32_t **ids, size_t *n_ids, size_t **ends) {
    encoder e = {.tok = tok};
    char *clean = NULL;
    gptc_status st = GPTC_OK;
    if (!gptc_utf8_valid(text, len)) {
        if ((st = gptc_utf8_sanitize(text, len, &clean, &len)) != GPTC_OK) goto cleanup;
        text = clean;
    }
    if ((st = gptc_str_map_init(&e.cache, 1024)) != GPTC_OK) goto cleanup;
    if (!(e.md = pcre2_match_data_create_from_pattern(tok->re, NULL))) {
        st = gptc_fail(GPTC_ERR_NOMEM, "out of memory for regex match data");
        goto cleanup;
    }
    if (ends) {
        e.base = text;
        if ((st = encode_ordinary(&e, text, len)) != GPTC_OK) goto cleanup;
        *ends = e.ends;
        *n_ids = e.n_ends;
        e.ends = NULL;
        goto cleanup;
    }
    /* English runs about 4 bytes a token. */
    if ((st = grow((void **)&e.ids, &e.cap_ids, len / 4 + 16, sizeof *e.ids)) != GPTC_OK)
        goto cleanup;
    if ((st = split_added(&e, text, len, tok->n_added ? 0 : 2)) != GPTC_OK) goto cleanup;
    *ids = e.ids;
    *n_ids = e.n_ids;
    e.ids = NULL;
cleanup:
    free(e.ids);
    free(e.ends);
    free(clean);
    pcre2_match_data_free(e.md);
    gptc_str_map_free(&e.cache);
    free(e.spans);
    free(e.cache_ids);
    free(e.word);
    free(e.whole);
    gptc_bpe_scratch_free(&e.bpe);
    return st;
}

gptc_status gptc_tokenizer_encode(const gptc_tokenizer *tok, const char *text, size_t len,
                                  int32_t **ids, size_t *n_ids) {
    if (!ids || !n_ids)
        return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_encode: %s is NULL", ids ? "n_ids" : "ids");
    *ids = NULL;
    *n_ids = 0;
    if (!tok) return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_encode: tok is NULL");
    if (!text && len)
        return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_encode: text is NULL but len is %zu", len);
    if (!len) return GPTC_OK;
    return run_encoder(tok, text, len, ids, n_ids, NULL);
}

gptc_status gptc_tokenizer_pieces(const gptc_tokenizer *tok, const char *text, size_t len,
                                  size_t **ends, size_t *n_ends) {
    if (!tok || !ends || !n_ends || (!text && len))
        return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_pieces: a NULL argument");
    *ends = NULL;
    *n_ends = 0;
    if (!len) return GPTC_OK;
    return run_encoder(tok, text, len, NULL, n_ends, ends);
}

/* ------------------------------------------------------------------ */
/* Decoding. */

gptc_status gptc_tokenizer_decode(const gptc_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  char **text, size_t *len) {
    if (!text || !len)
        return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_decode: %s is NULL", text ? "len" : "text");
    *text = NULL;
    *len = 0;
    if (!tok) return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_decode: tok is NULL");
    if (!ids && n_ids)
        return gptc_fail(GPTC_ERR_ARG, "gptc_tokenizer_decode: ids is NULL but n_ids is %zu",
                         n_ids);
    size_t total = 0;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return gptc_fail(
                GPTC_ERR_RANGE,
                "gptc_tokenizer_decode: token id %d (at position %zu) is out of range [0, %d)",
                ids[i], i, tok->n_vocab);
        total += tok->bytes_len[ids[i]];
    }
    char *raw = malloc(total + 1);
    if (!raw) return gptc_fail(GPTC_ERR_NOMEM, "out of memory decoding %zu bytes", total);
    size_t k = 0;
    for (size_t i = 0; i < n_ids; i++) {
        memcpy(raw + k, tok->bytes + tok->bytes_off[ids[i]], tok->bytes_len[ids[i]]);
        k += tok->bytes_len[ids[i]];
    }
    raw[k] = '\0';
    if (gptc_utf8_valid(raw, k)) {
        *text = raw;
        *len = k;
        return GPTC_OK;
    }
    gptc_status st = gptc_utf8_sanitize(raw, k, text, len);
    free(raw);
    return st;
}
