/*
 * tok_batch.c - drives the tokenizer for tests/tokenizer_diff.py: thousands
 * of texts through one process instead of one CLI start each.
 *
 *   tok_batch DIR                  tokenizer from DIR (gptc_tokenizer_load)
 *   tok_batch --bench FILE DIR     time encoding the first 1 MB of FILE
 *
 * Batch protocol on stdin, repeated until end of input: one op byte, a 4-byte
 * little-endian payload length, the payload. One line on stdout per record:
 *   'E' text         -> the ids, space-separated
 *   'D' int32 LE ids -> hex of gptc_tokenizer_decode's bytes
 *   'S' int32 LE ids -> hex of everything the streaming detokenizer emitted
 *   'P' text         -> byte offsets where the pre-tokenizer's pieces end
 * A failing call prints "ERR <status> <message>" instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gptc.h"
#include "tokenizer.h" /* gptc_tokenizer_pieces */

static int read_exact(void *buf, size_t n) { return fread(buf, 1, n, stdin) == n; }

static void print_hex(const char *s, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        putchar(digits[(unsigned char)s[i] >> 4]);
        putchar(digits[(unsigned char)s[i] & 15]);
    }
    putchar('\n');
}

static void print_error(gptc_status st) { printf("ERR %d %s\n", (int)st, gptc_last_error()); }

/* Streams ids through a detokenizer and prints the concatenated output. */
static gptc_status stream(const gptc_tokenizer *tok, const int32_t *ids, size_t n) {
    gptc_detok *d = NULL;
    char *all = NULL;
    size_t len = 0, cap = 0;
    gptc_status st = gptc_detok_new(tok, &d);
    for (size_t i = 0; st == GPTC_OK && i <= n; i++) {
        const char *piece;
        size_t piece_len;
        st = i < n ? gptc_detok_push(d, ids[i], &piece, &piece_len)
                   : gptc_detok_flush(d, &piece, &piece_len);
        if (st != GPTC_OK) break;
        if (len + piece_len > cap) {
            cap = 2 * (len + piece_len) + 64;
            char *p = realloc(all, cap);
            if (!p) {
                st = GPTC_ERR_NOMEM;
                break;
            }
            all = p;
        }
        if (piece_len) memcpy(all + len, piece, piece_len);
        len += piece_len;
    }
    if (st == GPTC_OK) print_hex(all, len);
    free(all);
    gptc_detok_free(d);
    return st;
}

static int bench(const gptc_tokenizer *tok, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tok_batch: cannot open %s\n", path);
        return 1;
    }
    size_t cap = 1 << 20;
    char *text = malloc(cap);
    size_t n = text ? fread(text, 1, cap, f) : 0;
    fclose(f);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gptc_status st = gptc_tokenizer_encode(tok, text, n, &ids, &n_ids);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (st != GPTC_OK)
        fprintf(stderr, "tok_batch: encode failed: %s\n", gptc_last_error());
    else
        fprintf(stderr, "tok_batch: encoded %zu bytes into %zu tokens in %.3f s: %.2f MB/s\n", n,
                n_ids, s, (double)n / 1e6 / s);
    printf("%.6f\n", s);
    free(ids);
    free(text);
    return st != GPTC_OK;
}

int main(int argc, char **argv) {
    const char *bench_file = NULL;
    if (argc == 4 && strcmp(argv[1], "--bench") == 0) {
        bench_file = argv[2];
        argv += 2;
        argc -= 2;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: tok_batch [--bench FILE] DIR\n");
        return 2;
    }
    gptc_tokenizer *tok = NULL;
    if (gptc_tokenizer_load(argv[1], &tok) != GPTC_OK) {
        fprintf(stderr, "tok_batch: %s\n", gptc_last_error());
        return 1;
    }
    if (bench_file) {
        int rc = bench(tok, bench_file);
        gptc_tokenizer_free(tok);
        return rc;
    }

    int rc = 0;
    char *buf = NULL;
    unsigned char op, hdr[4];
    while (read_exact(&op, 1)) {
        if (!read_exact(hdr, 4)) {
            rc = 1;
            break;
        }
        size_t n =
            (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
        char *p = realloc(buf, n + 1);
        if (!p || !read_exact(p, n)) {
            free(p);
            buf = NULL;
            rc = 1;
            break;
        }
        buf = p;
        gptc_status st = GPTC_OK;
        if (op == 'E') {
            int32_t *ids = NULL;
            size_t n_ids = 0;
            st = gptc_tokenizer_encode(tok, buf, n, &ids, &n_ids);
            if (st == GPTC_OK) {
                for (size_t i = 0; i < n_ids; i++)
                    printf(i ? " %d" : "%d", ids[i]);
                putchar('\n');
            }
            free(ids);
        } else if (op == 'P') {
            size_t *ends = NULL, n_ends = 0;
            st = gptc_tokenizer_pieces(tok, buf, n, &ends, &n_ends);
            if (st == GPTC_OK) {
                for (size_t i = 0; i < n_ends; i++)
                    printf(i ? " %zu" : "%zu", ends[i]);
                putchar('\n');
            }
            free(ends);
        } else if (op == 'D' || op == 'S') {
            size_t n_ids = n / 4;
            int32_t *ids = malloc(n_ids * sizeof *ids + 1);
            if (!ids) {
                rc = 1;
                break;
            }
            for (size_t i = 0; i < n_ids; i++) {
                const unsigned char *b = (const unsigned char *)buf + 4 * i;
                ids[i] = (int32_t)((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                                   (uint32_t)b[3] << 24);
            }
            if (op == 'D') {
                char *text = NULL;
                size_t len = 0;
                st = gptc_tokenizer_decode(tok, ids, n_ids, &text, &len);
                if (st == GPTC_OK) print_hex(text, len);
                free(text);
            } else {
                st = stream(tok, ids, n_ids);
            }
            free(ids);
        } else {
            fprintf(stderr, "tok_batch: unknown op 0x%02x\n", op);
            rc = 1;
            break;
        }
        if (st != GPTC_OK) print_error(st);
    }
    fflush(stdout);
    free(buf);
    gptc_tokenizer_free(tok);
    return rc;
}
