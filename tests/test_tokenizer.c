/*
 * test_tokenizer.c - unit tests of the tokenizer, detokenizer and loaders.
 *
 * Uses GPT-2's real vocabulary from $GPTC_SHARED/data/gpt2-tokenizer. The
 * expected ids below were obtained from the reference, Hugging Face
 * tokenizers 0.23.3 built as GPT2TokenizerFast builds it:
 *   t = Tokenizer(models.BPE.from_file("vocab.json", "merges.txt"))
 *   t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
 *   t.add_special_tokens(["<|endoftext|>"]); t.encode(text).ids
 * (invalid UTF-8 inputs: t.encode(raw.decode("utf-8", errors="replace"))).
 * tests/tokenizer_diff.py compares against the live reference at scale; this
 * file pins a few cases and the error paths.
 *
 * Random tests print their seed; set GPTC_TEST_SEED to replay one. Exits 1 if
 * any check failed, listing each.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gptc.h"

static int g_checks, g_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            g_failed++;                                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static uint64_t g_rng;

static uint64_t rnd(void) {
    /* xorshift64*: plenty for test data. */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1DULL;
}

static uint32_t rnd_below(uint32_t n) { return (uint32_t)(rnd() % n); }

/* ------------------------------------------------------------------ */
/* Helpers. */

static int ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* Encodes and compares with expected ids; prints both on a mismatch. */
static void expect_ids(const gptc_tokenizer *tok, const char *text, size_t len, const int32_t *want,
                       size_t n_want, const char *name) {
    int32_t *ids = NULL;
    size_t n = 0;
    gptc_status st = gptc_tokenizer_encode(tok, text, len, &ids, &n);
    CHECK(st == GPTC_OK, "encode %s: %s", name, gptc_last_error());
    int same = ids_equal(ids, n, want, n_want);
    CHECK(same, "encode %s: ids differ from the reference", name);
    if (!same) {
        print_ids("want", want, n_want);
        print_ids("got ", ids, n);
    }
    free(ids);
}

#define EXPECT_IDS(tok, lit, ...)                                                                  \
    do {                                                                                           \
        static const int32_t want_[] = {__VA_ARGS__};                                              \
        expect_ids(tok, lit, sizeof lit - 1, want_, sizeof want_ / sizeof want_[0], #lit);         \
    } while (0)

static int utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned b = u[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else {
            return 0;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= n || u[i + k] < lo || u[i + k] > hi) return 0;
            lo = 0x80;
            hi = 0xBF;
        }
        i += need + 1;
    }
    return 1;
}

static size_t put_utf8(char *out, uint32_t cp) {
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

/* A random code point, weighted towards text that BPE merges a lot. */
static uint32_t random_code_point(void) {
    static const uint32_t picks[] = {' ',  '\n', '\t',   '\'',   's',   'e',   't',
                                     0xA0, 0x85, 0x3000, 0x2028, 0x301, 0xFFFD};
    uint32_t r = rnd_below(10), cp;
    if (r < 4) return 'a' + rnd_below(26);
    if (r < 6) return picks[rnd_below(sizeof picks / sizeof picks[0])];
    if (r < 7) return 0x20 + rnd_below(0x5F);
    if (r < 8) return 0x4E00 + rnd_below(0x5000);
    if (r < 9) return 0x1F300 + rnd_below(0x300);
    do
        cp = rnd_below(0x110000);
    while (cp >= 0xD800 && cp < 0xE000);
    return cp;
}

/* ------------------------------------------------------------------ */
/* Tests on GPT-2's tokenizer. */

static void test_known_encodings(const gptc_tokenizer *tok) {
    CHECK(gptc_tokenizer_n_vocab(tok) == 50257, "n_vocab %d", gptc_tokenizer_n_vocab(tok));
    CHECK(gptc_tokenizer_eos_id(tok) == 50256, "eos %d", gptc_tokenizer_eos_id(tok));

    EXPECT_IDS(tok, "Hello world", 15496, 995);
    EXPECT_IDS(tok, "I'm here, they've   gone\n\n  x  ", 40, 1101, 994, 11, 484, 1053, 220, 220,
               3750, 628, 220, 2124, 220, 220);
    EXPECT_IDS(tok, "<|endoftext|>abc <|endoftext|>", 50256, 39305, 220, 50256);
    EXPECT_IDS(tok, "x<|endoftext", 87, 27, 91, 437, 1659, 5239);
    /* CJK and emoji with a skin tone: characters split over byte-level tokens. */
    EXPECT_IDS(tok, "日本語 😀👍🏽", 33768, 98, 17312, 105, 45739, 252, 30325, 222, 41840,
               235, 8582, 237, 121);
    /* U+0085 is whitespace to the reference, U+180E is not; U+3000 is. */
    EXPECT_IDS(tok,
               "a\xC2\x85"
               "b\xE1\xA0\x8E"
               "c  \xE3\x80\x80 x",
               64, 126, 227, 65, 157, 254, 236, 66, 220, 220, 5099, 222, 2124);
    /* 'S is not a contraction (the regex is case-sensitive); 'll is. */
    EXPECT_IDS(tok, "It'S 'll", 1026, 6, 50, 705, 297);
    /* A combining mark, a vulgar fraction (N), an Arabic-Indic digit. */
    EXPECT_IDS(tok, "e\xCC\x81 \xC2\xBD \xD9\xA3", 68, 136, 223, 25208, 18923, 96);
    /* Embedded NUL is an ordinary character. */
    EXPECT_IDS(tok, "a\0b", 64, 188, 65);

    int32_t *ids = NULL;
    size_t n = 99;
    CHECK(gptc_tokenizer_encode(tok, "", 0, &ids, &n) == GPTC_OK && n == 0,
          "empty text gives %zu ids", n);
    free(ids);
}

static void test_invalid_utf8(const gptc_tokenizer *tok) {
    /* Reference: "ab\ufffd\ufffd c\ufffd" (0xFF is one unit, E2 82 one, F0 9F 98 one). */
    EXPECT_IDS(tok, "ab\xFF\xE2\x82 c\xF0\x9F\x98", 397, 6353, 269, 4210);
    /* Overlong E0 80 AF and surrogate ED A0 80: every byte is its own unit, six U+FFFD. */
    EXPECT_IDS(tok, "\xE0\x80\xAF\xED\xA0\x80!", 12100, 6353, 0);

    /* Encoding invalid input equals encoding its replaced form. */
    static const struct {
        const char *raw, *replaced;
    } cases[] = {
        {"x\x80y", "x\xEF\xBF\xBDy"},
        {"\xC3(", "\xEF\xBF\xBD("},
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"},
        {"caf\xC3", "caf\xEF\xBF\xBD"},
        {"\xF0\x9F\x98 ok", "\xEF\xBF\xBD ok"},
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        gptc_status sa = gptc_tokenizer_encode(tok, cases[i].raw, strlen(cases[i].raw), &a, &na);
        gptc_status sb =
            gptc_tokenizer_encode(tok, cases[i].replaced, strlen(cases[i].replaced), &b, &nb);
        CHECK(sa == GPTC_OK && sb == GPTC_OK && ids_equal(a, na, b, nb), "invalid case %zu", i);
        char *text = NULL;
        size_t len = 0;
        CHECK(gptc_tokenizer_decode(tok, a, na, &text, &len) == GPTC_OK &&
                  len == strlen(cases[i].replaced) && memcmp(text, cases[i].replaced, len) == 0,
              "decode(encode(invalid case %zu)) is not its replaced form", i);
        free(text);
        free(a);
        free(b);
    }

    /* Decoding bytes that do not form UTF-8: tokens 447 "âĢ" = E2 80 and 98 "¥" = A5. */
    static const int32_t split[] = {447, 98, 447, 447, 236, 64};
    char *text = NULL;
    size_t len = 0;
    CHECK(gptc_tokenizer_decode(tok, split, 6, &text, &len) == GPTC_OK, "%s", gptc_last_error());
    /* Reference: "\u2025\ufffd\u200ea". */
    static const char want[] = "\xE2\x80\xA5\xEF\xBF\xBD\xE2\x80\x8E"
                               "a";
    CHECK(len == sizeof want - 1 && memcmp(text, want, len) == 0,
          "decode of split characters (%zu bytes)", len);
    CHECK(text && text[len] == '\0', "decode result is not NUL-terminated");
    free(text);
}

static void test_round_trip(const gptc_tokenizer *tok) {
    char buf[4 * 200 + 1];
    for (int iter = 0; iter < 500; iter++) {
        size_t len = 0, n_chars = rnd_below(200);
        for (size_t i = 0; i < n_chars; i++)
            len += put_utf8(buf + len, random_code_point());
        int32_t *ids = NULL;
        size_t n = 0;
        char *text = NULL;
        size_t text_len = 0;
        gptc_status st = gptc_tokenizer_encode(tok, buf, len, &ids, &n);
        if (st == GPTC_OK) st = gptc_tokenizer_decode(tok, ids, n, &text, &text_len);
        CHECK(st == GPTC_OK && text_len == len && memcmp(text, buf, len) == 0,
              "round trip of %zu random bytes (iteration %d)", len, iter);
        free(ids);
        free(text);
    }
    static const char *texts[] = {
        "The quick brown fox.\n\n\tjumps  ", "<|endoftext|><|endoftext|>x", " ",
        "👨‍👩‍👧‍👦🏳️‍🌈", "def f(x):\n    return x**2\n"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0, len = 0;
        char *text = NULL;
        CHECK(gptc_tokenizer_encode(tok, texts[i], strlen(texts[i]), &ids, &n) == GPTC_OK &&
                  gptc_tokenizer_decode(tok, ids, n, &text, &len) == GPTC_OK &&
                  len == strlen(texts[i]) && memcmp(text, texts[i], len) == 0,
              "round trip of \"%s\"", texts[i]);
        free(ids);
        free(text);
    }
}

/* The streamed pieces are whole characters and add up to decode(). */
static void test_detok(const gptc_tokenizer *tok) {
    int32_t n_vocab = gptc_tokenizer_n_vocab(tok), ids[40];
    gptc_detok *d = NULL;
    CHECK(gptc_detok_new(tok, &d) == GPTC_OK, "%s", gptc_last_error());
    if (!d) return;
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = rnd_below(40);
        for (size_t i = 0; i < n; i++) {
            uint32_t r = rnd_below(10);
            /* Ids 94..255 are single bytes, many of them parts of multi-byte characters. */
            ids[i] = r < 5   ? 94 + (int32_t)rnd_below(162)
                     : r < 9 ? (int32_t)rnd_below((uint32_t)n_vocab)
                             : 447;
        }
        char *want = NULL, *got = malloc(3 * 40 * 128 + 1);
        size_t want_len = 0, got_len = 0;
        CHECK(gptc_tokenizer_decode(tok, ids, n, &want, &want_len) == GPTC_OK, "%s",
              gptc_last_error());
        int pieces_ok = 1;
        for (size_t i = 0; i <= n; i++) {
            const char *piece = NULL;
            size_t piece_len = 0;
            gptc_status st = i < n ? gptc_detok_push(d, ids[i], &piece, &piece_len)
                                   : gptc_detok_flush(d, &piece, &piece_len);
            if (st != GPTC_OK || !utf8_valid(piece, piece_len)) pieces_ok = 0;
            if (st == GPTC_OK && got_len + piece_len <= 3 * 40 * 128) {
                memcpy(got + got_len, piece, piece_len);
                got_len += piece_len;
            }
        }
        CHECK(pieces_ok, "a streamed piece was not whole UTF-8 characters (iteration %d)", iter);
        int same = want_len == got_len && memcmp(want, got, got_len) == 0;
        CHECK(same, "streamed text differs from decode() (iteration %d)", iter);
        if (!same) print_ids("ids", ids, n);
        free(want);
        free(got);
    }
    /* A character completed by the next token is held back, then emitted whole. */
    const char *piece;
    size_t len;
    CHECK(gptc_detok_push(d, 447, &piece, &len) == GPTC_OK && len == 0,
          "E2 80 alone emitted %zu bytes", len);
    CHECK(gptc_detok_push(d, 98, &piece, &len) == GPTC_OK && len == 3 &&
              memcmp(piece, "\xE2\x80\xA5", 3) == 0,
          "E2 80 + A5 should emit U+2025");
    /* An incomplete tail becomes one U+FFFD at flush. */
    CHECK(gptc_detok_push(d, 447, &piece, &len) == GPTC_OK && len == 0, "held back");
    CHECK(gptc_detok_flush(d, &piece, &len) == GPTC_OK && len == 3 &&
              memcmp(piece, "\xEF\xBF\xBD", 3) == 0,
          "flush of an incomplete character");
    CHECK(gptc_detok_push(d, n_vocab, &piece, &len) == GPTC_ERR_RANGE, "push of id n_vocab");
    gptc_detok_free(d);
}

static void test_api_errors(const gptc_tokenizer *tok) {
    char *text = NULL;
    size_t len = 0;
    int32_t bad[] = {15496, 50257};
    CHECK(gptc_tokenizer_decode(tok, bad, 2, &text, &len) == GPTC_ERR_RANGE, "decode of id 50257");
    CHECK(strstr(gptc_last_error(), "50257") != NULL, "message should name the id: %s",
          gptc_last_error());
    int32_t neg = -1;
    CHECK(gptc_tokenizer_decode(tok, &neg, 1, &text, &len) == GPTC_ERR_RANGE, "decode of id -1");
    size_t blen = 7;
    CHECK(gptc_tokenizer_token_bytes(tok, 50257, &blen) == NULL && blen == 0,
          "token_bytes out of range");
    const char *b = gptc_tokenizer_token_bytes(tok, 50256, &blen);
    CHECK(b && blen == 13 && memcmp(b, "<|endoftext|>", 13) == 0, "token_bytes of <|endoftext|>");
    b = gptc_tokenizer_token_bytes(tok, 220, &blen);
    CHECK(b && blen == 1 && b[0] == ' ', "token 220 is a space");
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(gptc_tokenizer_encode(tok, NULL, 3, &ids, &n) == GPTC_ERR_ARG, "encode of NULL text");
    CHECK(gptc_tokenizer_encode(tok, "x", 1, NULL, &n) == GPTC_ERR_ARG, "encode with NULL ids");
    CHECK(gptc_tokenizer_encode(NULL, "x", 1, &ids, &n) == GPTC_ERR_ARG,
          "encode with NULL tokenizer");
    CHECK(gptc_tokenizer_decode(tok, NULL, 0, &text, &len) == GPTC_OK && len == 0 && text &&
              !text[0],
          "decode of no ids");
    free(text);
}

/* ------------------------------------------------------------------ */
/* Loading, with small files in a temporary folder. */

static char g_tmp[64];

static void write_file(const char *name, const char *content) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        CHECK(0, "cannot write %s", path);
        return;
    }
    fputs(content, f);
    fclose(f);
}

static void remove_file(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    unlink(path);
}

/* Loads g_tmp and checks the status and that the message names `needle`. */
static void expect_load(gptc_status want, const char *needle, const char *what) {
    gptc_tokenizer *tok = NULL;
    gptc_status st = gptc_tokenizer_load(g_tmp, &tok);
    CHECK(st == want, "%s: status %d, want %d (%s)", what, (int)st, (int)want, gptc_last_error());
    if (st != GPTC_OK)
        CHECK(strstr(gptc_last_error(), needle) != NULL, "%s: message \"%s\" should mention \"%s\"",
              what, gptc_last_error(), needle);
    CHECK((st == GPTC_OK) == (tok != NULL), "%s: handle set iff success", what);
    gptc_tokenizer_free(tok);
}

/* Vocabulary in stand-ins: "Ġ" is the space byte. */
#define SMALL_VOCAB                                                                                \
    "{\"a\": 0, \"b\": 1, \"c\": 2, \"\\u0120\": 3, \"ab\": 4, \"abc\": 5, \"\\u0120a\": 6}"

static const char *tokenizer_json(const char *merges, const char *pre_extra,
                                  const char *normalizer) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 7, \"content\": \"<x>\", "
             "\"single_word\": false,"
             " \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}],"
             " \"normalizer\": %s, \"pre_tokenizer\": {\"type\": \"ByteLevel\", "
             "\"add_prefix_space\": %s,"
             " \"trim_offsets\": true, \"use_regex\": true}, \"post_processor\": null, "
             "\"decoder\": null,"
             " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
             "\"fuse_unk\": false,"
             " \"byte_fallback\": false, \"vocab\": " SMALL_VOCAB ", \"merges\": %s}}",
             normalizer, pre_extra, merges);
    return buf;
}

/* Ids from the reference: Tokenizer.from_str(that JSON).encode("abc ab<x>a"). */
static void expect_small_encoding(void) {
    gptc_tokenizer *tok = NULL;
    CHECK(gptc_tokenizer_load(g_tmp, &tok) == GPTC_OK, "small tokenizer.json: %s",
          gptc_last_error());
    if (!tok) return;
    EXPECT_IDS(tok, "abc ab<x>a", 5, 3, 4, 7, 0);
    EXPECT_IDS(tok, "abc a<x>", 5, 6, 7);
    CHECK(gptc_tokenizer_n_vocab(tok) == 8, "n_vocab %d", gptc_tokenizer_n_vocab(tok));
    CHECK(gptc_tokenizer_eos_id(tok) == -1, "no <|endoftext|>");
    size_t len;
    const char *b = gptc_tokenizer_token_bytes(tok, 6, &len);
    CHECK(b && len == 2 && memcmp(b, " a", 2) == 0, "token 6 is \" a\"");
    gptc_tokenizer_free(tok);
}

static void test_loading(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/gptc_tok_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        CHECK(0, "mkdtemp failed");
        return;
    }

    expect_load(GPTC_ERR_IO, g_tmp, "empty folder");
    CHECK(strstr(gptc_last_error(), "vocab.json") && strstr(gptc_last_error(), "merges.txt") &&
              strstr(gptc_last_error(), "tokenizer.json"),
          "message should list the files looked for: %s", gptc_last_error());

    write_file("merges.txt", "#version: 0.2\na b\nab c\n\xC4\xA0 a\n");
    write_file("vocab.json", "{\"a\": 0, \"b\": ");
    expect_load(GPTC_ERR_FORMAT, "vocab.json", "malformed vocab.json");
    write_file("vocab.json", "[1, 2]");
    expect_load(GPTC_ERR_FORMAT, "vocab.json", "vocab.json not an object");
    write_file("vocab.json", "{\"a\": 0, \"b\": \"1\"}");
    expect_load(GPTC_ERR_FORMAT, "vocab.json", "string id");
    write_file("vocab.json", "{\"a\": 0, \"b\": 1.5}");
    expect_load(GPTC_ERR_FORMAT, "vocab.json", "fractional id");
    write_file("vocab.json", "{\"a\": 0, \"b\": -1}");
    expect_load(GPTC_ERR_FORMAT, "vocab.json", "negative id");
    write_file("vocab.json", "{\"a\": 0, \"b\": 9}");
    expect_load(GPTC_ERR_FORMAT, "out of range", "id beyond the vocabulary");
    write_file("vocab.json", "{\"a\": 0, \"b\": 0}");
    expect_load(GPTC_ERR_FORMAT, "id 0", "two tokens with one id");

    write_file("vocab.json", SMALL_VOCAB);
    expect_load(GPTC_OK, "", "good vocab.json + merges.txt");
    write_file("merges.txt", "#version: 0.2\na b\nab c d\n");
    expect_load(GPTC_ERR_FORMAT, "line 3", "three tokens on a merges line");
    CHECK(strstr(gptc_last_error(), "merges.txt") != NULL, "message names merges.txt: %s",
          gptc_last_error());
    write_file("merges.txt", "#version: 0.2\na b\n\nab c\n");
    expect_load(GPTC_ERR_FORMAT, "line 3", "empty merges line");
    write_file("merges.txt", "#version: 0.2\na zz\n");
    expect_load(GPTC_ERR_FORMAT, "line 2", "merge of a token not in the vocabulary");
    write_file("merges.txt", "#version: 0.2\nb c\n");
    expect_load(GPTC_ERR_FORMAT, "\"bc\"", "merge whose result is not in the vocabulary");

    /* With vocab.json gone, tokenizer.json is used. */
    remove_file("vocab.json");
    write_file("tokenizer.json",
               tokenizer_json("[\"a b\", \"ab c\", \"\\u0120 a\"]", "false", "null"));
    expect_small_encoding();
    write_file(
        "tokenizer.json",
        tokenizer_json("[[\"a\", \"b\"], [\"ab\", \"c\"], [\"\\u0120\", \"a\"]]", "false", "null"));
    expect_small_encoding();
    write_file("tokenizer.json", tokenizer_json("[\"a b\", \"ab\"]", "false", "null"));
    expect_load(GPTC_ERR_FORMAT, "model.merges", "merge without a space");
    write_file("tokenizer.json", tokenizer_json("[\"a b\"]", "true", "null"));
    expect_load(GPTC_ERR_UNSUPPORTED, "add_prefix_space", "add_prefix_space true");
    write_file("tokenizer.json", tokenizer_json("[\"a b\"]", "false", "{\"type\": \"NFC\"}"));
    expect_load(GPTC_ERR_UNSUPPORTED, "normalizer", "a normalizer");
    write_file("tokenizer.json", "{\"model\": ");
    expect_load(GPTC_ERR_FORMAT, "tokenizer.json", "malformed tokenizer.json");

    gptc_tokenizer *tok = NULL;
    CHECK(gptc_tokenizer_load_files("/nonexistent/vocab.json", "/nonexistent/merges.txt", &tok) ==
                  GPTC_ERR_IO &&
              strstr(gptc_last_error(), "/nonexistent/vocab.json"),
          "missing explicit files: %s", gptc_last_error());
    CHECK(gptc_tokenizer_load(NULL, &tok) == GPTC_ERR_ARG, "NULL folder");

    remove_file("tokenizer.json");
    remove_file("merges.txt");
    rmdir(g_tmp);
}

int main(void) {
    const char *seed_env = getenv("GPTC_TEST_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : (uint64_t)time(NULL);
    g_rng = seed * 0x9E3779B97F4A7C15ULL + 1;
    printf("test_tokenizer: seed %llu (replay with GPTC_TEST_SEED=%llu)\n",
           (unsigned long long)seed, (unsigned long long)seed);

    const char *shared = getenv("GPTC_SHARED");
    char dir[1024];
    if (shared)
        snprintf(dir, sizeof dir, "%s/data/gpt2-tokenizer", shared);
    else
        snprintf(dir, sizeof dir, "%s/../shared/data/gpt2-tokenizer",
                 getenv("GPTC_ROOT") ? getenv("GPTC_ROOT") : ".");
    gptc_tokenizer *tok = NULL;
    gptc_status st = gptc_tokenizer_load(dir, &tok);
    CHECK(st == GPTC_OK, "loading %s: %s", dir, gptc_last_error());
    if (tok) {
        test_known_encodings(tok);
        test_invalid_utf8(tok);
        test_round_trip(tok);
        test_detok(tok);
        test_api_errors(tok);
        gptc_tokenizer_free(tok);
    }
    test_loading();

    printf("test_tokenizer: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed != 0;
}
