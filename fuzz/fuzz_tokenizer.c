/*
 * fuzz_tokenizer.c - libFuzzer target for the tokenizer.
 *
 * Three out of four inputs are text for GPT-2's tokenizer (from
 * $GPTC_TOKENIZER_DIR, else the shared data folder, else a small byte-level
 * vocabulary written at start-up). Each is encoded, decoded and streamed
 * through the detokenizer, and the invariants are checked:
 * decode(encode(x)) is x with invalid UTF-8 replaced, and the streamed text
 * equals decode(). The other inputs become tokenizer files (vocab.json +
 * merges.txt, or tokenizer.json) to exercise the loaders' error paths.
 *
 *   CC=clang cmake -B build-fuzz -DGPTC_FUZZ=ON && cmake --build build-fuzz
 *   build-fuzz/fuzz/fuzz_tokenizer -max_total_time=60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gptc.h"
#include "tokenizer.h" /* gptc_utf8_sanitize */

#ifndef GPTC_FUZZ_TOKENIZER_DIR
#define GPTC_FUZZ_TOKENIZER_DIR "../shared/data/gpt2-tokenizer"
#endif

static gptc_tokenizer *g_tok;
static char g_dir[64]; /* scratch folder for loader inputs */

static void check(int ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "fuzz_tokenizer: invariant broken: %s\n", what);
    abort();
}

static void write_file(const char *name, const uint8_t *data, size_t n) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void remove_file(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    unlink(path);
}

/* A byte-level vocabulary of the 256 stand-ins and a few merges, when no real one is found. */
static gptc_status load_fallback(void) {
    static char vocab[8192];
    size_t k = 0;
    k += (size_t)snprintf(vocab + k, sizeof vocab - k, "{");
    int id = 0, extra = 0x100;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : extra++;
        k += (size_t)snprintf(vocab + k, sizeof vocab - k, "%s\"\\u%04x\": %d", b ? ", " : "", cp,
                              id++);
    }
    snprintf(vocab + k, sizeof vocab - k,
             ", \"th\": %d, \"the\": %d, \"\\u0120the\": %d, \"<|endoftext|>\": %d}", id, id + 1,
             id + 2, id + 3);
    static const char merges[] = "#version: 0.2\nt h\nth e\n\xC4\xA0 the\n";
    write_file("vocab.json", (const uint8_t *)vocab, strlen(vocab));
    write_file("merges.txt", (const uint8_t *)merges, sizeof merges - 1);
    return gptc_tokenizer_load(g_dir, &g_tok);
}

static void remove_scratch(void) {
    remove_file("vocab.json");
    remove_file("merges.txt");
    remove_file("tokenizer.json");
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    snprintf(g_dir, sizeof g_dir, "/tmp/gptc_fuzz_tok_XXXXXX");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "fuzz_tokenizer: mkdtemp failed\n");
        abort();
    }
    atexit(remove_scratch);
    const char *dir = getenv("GPTC_TOKENIZER_DIR");
    char shared[1024];
    if (!dir && getenv("GPTC_SHARED")) {
        snprintf(shared, sizeof shared, "%s/data/gpt2-tokenizer", getenv("GPTC_SHARED"));
        dir = shared;
    }
    if (gptc_tokenizer_load(dir ? dir : GPTC_FUZZ_TOKENIZER_DIR, &g_tok) != GPTC_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s; using a small built-in vocabulary\n",
                gptc_last_error());
        if (load_fallback() != GPTC_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", gptc_last_error());
            abort();
        }
    }
    return 0;
}

static void fuzz_text(const gptc_tokenizer *tok, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0, dec_len = 0, want_len = 0;
    char *dec = NULL, *want = NULL;
    check(gptc_tokenizer_encode(tok, text, len, &ids, &n) == GPTC_OK, "encode succeeds");
    check(gptc_tokenizer_decode(tok, ids, n, &dec, &dec_len) == GPTC_OK, "decode succeeds");
    check(gptc_utf8_sanitize(text, len, &want, &want_len) == GPTC_OK, "sanitize succeeds");
    /* Every byte has a token in a byte-level vocabulary, so nothing is lost. */
    check(dec_len == want_len && memcmp(dec, want, dec_len) == 0,
          "decode(encode(x)) == x with U+FFFD");

    gptc_detok *d = NULL;
    check(gptc_detok_new(tok, &d) == GPTC_OK, "detok_new succeeds");
    size_t pos = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t piece_len;
        gptc_status st = i < n ? gptc_detok_push(d, ids[i], &piece, &piece_len)
                               : gptc_detok_flush(d, &piece, &piece_len);
        check(st == GPTC_OK, "detok succeeds");
        check(gptc_utf8_valid(piece, piece_len), "streamed pieces are whole characters");
        check(pos + piece_len <= dec_len && memcmp(dec + pos, piece, piece_len) == 0,
              "stream matches decode");
        pos += piece_len;
    }
    check(pos == dec_len, "stream is as long as decode");
    gptc_detok_free(d);
    free(ids);
    free(dec);
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] % 4 != 0) {
        fuzz_text(g_tok, (const char *)data + 1, size - 1);
        return 0;
    }
    /*
     * Loader input. Byte 0 % 8 == 0: byte 1 says where vocab.json ends (as a
     * fraction of the rest, in 256ths) and merges.txt follows; otherwise the
     * rest is a tokenizer.json.
     */
    if (data[0] % 8 == 0) {
        const uint8_t *p = data + 2;
        size_t body = size > 2 ? size - 2 : 0, cut = size > 2 ? (size_t)data[1] * body / 256 : 0;
        remove_file("tokenizer.json");
        write_file("vocab.json", p, cut);
        write_file("merges.txt", p + cut, body - cut);
    } else {
        remove_file("vocab.json");
        remove_file("merges.txt");
        write_file("tokenizer.json", data + 1, size - 1);
    }
    gptc_tokenizer *tok = NULL;
    if (gptc_tokenizer_load(g_dir, &tok) == GPTC_OK) {
        static const char sample[] = "Hello world <|endoftext|> 'll \xE2\x82 \xF0\x9F\x98\x80";
        int32_t *ids = NULL;
        size_t n = 0;
        char *text = NULL;
        size_t len = 0;
        check(gptc_tokenizer_encode(tok, sample, sizeof sample - 1, &ids, &n) == GPTC_OK,
              "encode with fuzzed files");
        check(gptc_tokenizer_decode(tok, ids, n, &text, &len) == GPTC_OK,
              "decode with fuzzed files");
        for (int32_t id = -1; id <= gptc_tokenizer_n_vocab(tok); id++) {
            size_t blen;
            const char *b = gptc_tokenizer_token_bytes(tok, id, &blen);
            check((b != NULL) == (id >= 0 && id < gptc_tokenizer_n_vocab(tok)),
                  "token_bytes range");
        }
        free(ids);
        free(text);
        gptc_tokenizer_free(tok);
    } else {
        check(gptc_last_error()[0] != '\0', "a failed load leaves a message");
    }
    return 0;
}
