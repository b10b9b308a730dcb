/*
 * detok.c - the streaming detokenizer: token ids in, UTF-8 text out as soon
 * as it is certain.
 *
 * One token often carries part of a character (GPT-2 splits many emoji and
 * CJK characters over two or three byte-level tokens), so text cannot be
 * printed token by token. The detokenizer holds back at most the 3 bytes of a
 * character that has begun correctly but not ended, and emits everything
 * before them. Bytes that can never be part of a valid character become
 * U+FFFD at once, with the same maximal-subsequence rule as
 * gptc_tokenizer_decode, so the emitted pieces always add up to decoding the
 * whole sequence in one go.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tokenizer.h"

struct gptc_detok {
    const gptc_tokenizer *tok;
    unsigned char pending[4]; /* the start of a character still to be completed */
    size_t n_pending;
    char *in; /* pending bytes followed by the new token's bytes */
    size_t cap_in;
    char *out;
    size_t cap_out;
};

gptc_status gptc_detok_new(const gptc_tokenizer *tok, gptc_detok **out) {
    if (!out) return gptc_fail(GPTC_ERR_ARG, "gptc_detok_new: out is NULL");
    *out = NULL;
    if (!tok) return gptc_fail(GPTC_ERR_ARG, "gptc_detok_new: tok is NULL");
    gptc_detok *d = calloc(1, sizeof *d);
    if (!d) return gptc_fail(GPTC_ERR_NOMEM, "out of memory for a detokenizer");
    d->tok = tok;
    *out = d;
    return GPTC_OK;
}

void gptc_detok_free(gptc_detok *d) {
    if (!d) return;
    free(d->in);
    free(d->out);
    free(d);
}

static gptc_status reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return GPTC_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (!p) return gptc_fail(GPTC_ERR_NOMEM, "out of memory in the detokenizer (%zu bytes)", need);
    *buf = p;
    *cap = c;
    return GPTC_OK;
}

gptc_status gptc_detok_push(gptc_detok *d, int32_t id, const char **text, size_t *len) {
    if (!d || !text || !len)
        return gptc_fail(GPTC_ERR_ARG, "gptc_detok_push: %s is NULL",
                         !d      ? "d"
                         : !text ? "text"
                                 : "len");
    *text = NULL;
    *len = 0;
    size_t n_bytes;
    const char *bytes = gptc_tokenizer_token_bytes(d->tok, id, &n_bytes);
    if (!bytes)
        return gptc_fail(GPTC_ERR_RANGE, "gptc_detok_push: token id %d is out of range [0, %d)", id,
                         gptc_tokenizer_n_vocab(d->tok));

    size_t n = d->n_pending + n_bytes;
    /* Output grows by at most 3 bytes (U+FFFD) per input byte. */
    gptc_status st = reserve(&d->in, &d->cap_in, n + 1);
    if (st == GPTC_OK) st = reserve(&d->out, &d->cap_out, 3 * n + 1);
    if (st != GPTC_OK) return st;
    memcpy(d->in, d->pending, d->n_pending);
    memcpy(d->in + d->n_pending, bytes, n_bytes);
    d->n_pending = 0;

    const unsigned char *in = (const unsigned char *)d->in;
    size_t i = 0, k = 0, used;
    while (i < n) {
        gptc_utf8_kind kind = gptc_utf8_next(in + i, n - i, &used);
        if (kind == GPTC_UTF8_INCOMPLETE) {
            /* Valid so far: the next token may complete it. */
            memcpy(d->pending, in + i, used);
            d->n_pending = used;
        } else if (kind == GPTC_UTF8_CHAR) {
            memcpy(d->out + k, in + i, used);
            k += used;
        } else {
            memcpy(d->out + k, "\xEF\xBF\xBD", 3);
            k += 3;
        }
        i += used;
    }
    d->out[k] = '\0';
    *text = d->out;
    *len = k;
    return GPTC_OK;
}

gptc_status gptc_detok_flush(gptc_detok *d, const char **text, size_t *len) {
    if (!d || !text || !len)
        return gptc_fail(GPTC_ERR_ARG, "gptc_detok_flush: %s is NULL",
                         !d      ? "d"
                         : !text ? "text"
                                 : "len");
    gptc_status st = reserve(&d->out, &d->cap_out, 4);
    if (st != GPTC_OK) return st;
    size_t k = 0;
    /* An unfinished character is one maximal invalid subsequence: one U+FFFD. */
    if (d->n_pending) {
        memcpy(d->out, "\xEF\xBF\xBD", 3);
        k = 3;
        d->n_pending = 0;
    }
    d->out[k] = '\0';
    *text = d->out;
    *len = k;
    return GPTC_OK;
}
