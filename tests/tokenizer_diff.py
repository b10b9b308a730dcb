#!/usr/bin/env python3
"""Differential test of gptc's tokenizer against Hugging Face `tokenizers`.

The reference is the Rust tokenizer behind transformers' GPT2TokenizerFast,
built here the way GPT2TokenizerFast builds it from vocab.json + merges.txt:
BPE, ByteLevel pre-tokenizer without prefix space, ByteLevel decoder, and
"<|endoftext|>" as a special added token.

What is compared (any difference prints the seed, the input and both outputs,
and the test exits 1):
  * every code point (surrogates aside) in contexts that expose its class:
    regex pieces of gptc vs. the reference's pre-tokenizer;
  * thousands of generated texts (random Unicode of every general category,
    scripts, combining marks, emoji, whitespace runs, code, numbers,
    contractions, <|endoftext|>, invalid UTF-8): token ids, through both
    vocab.json + merges.txt and tokenizer.json (new and legacy merges format),
    and through a tokenizer.json with extra added tokens (lstrip/rstrip,
    normalized or not);
  * decoding random id sequences: gptc_tokenizer_decode and the streaming
    detokenizer vs. the reference's decode;
  * `$GPTC_BIN tokenize -m DIR` on a few texts, when that CLI works;
  * the time to encode 1 MB of English (must be under a second).

Texts come from a fixed seed and from a fresh seed; both are printed first.
Replay a failure with --seed N (replaces the fresh seed).

Environment: GPTC_TOK_BATCH (path of tests/tok_batch), GPTC_SHARED (data),
GPTC_BIN (optional CLI). `--emit-unicode-tables` prints the class tables of
src/unicode.c as the installed reference sees them.
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

FIXED_SEED = 20240501
SURROGATES = range(0xD800, 0xE000)


def all_code_points():
    return [c for c in range(0x110000) if c not in SURROGATES]


# ---------------------------------------------------------------------------
# Unicode class tables as the reference's regex engine (Oniguruma) sees them.

def reference_class_ranges(pattern):
    """Ranges of code points that `pattern` (one character class) matches in the reference."""
    cps = all_code_points()
    # Splitting on runs of the class and dropping them leaves the code points outside it.
    split = pre_tokenizers.Split(Regex(pattern + "+"), behavior="removed")
    outside = set()
    for piece, _ in split.pre_tokenize_str("".join(map(chr, cps))):
        outside.update(map(ord, piece))
    ranges = []
    for c in cps:
        if c in outside:
            continue
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ranges


def emit_unicode_tables():
    for name, pattern in (("letter", r"\p{L}"), ("number", r"\p{N}"), ("space", r"\s")):
        print(f"const gptc_uni_range gptc_uni_{name}[] = {{")
        line = "   "
        for lo, hi in reference_class_ranges(pattern):
            item = f" {{0x{lo:04X}, 0x{hi:04X}}},"
            if len(line) + len(item) > 96:
                print(line)
                line = "   "
            line += item
        print(line)
        print("};")
        print(f"const size_t gptc_uni_n_{name} = sizeof gptc_uni_{name} / sizeof gptc_uni_{name}[0];")
        if name != "space":
            print()


# ---------------------------------------------------------------------------
# The C side: one tok_batch process per tokenizer folder.

class Batch:
    def __init__(self, exe, folder):
        self.exe, self.folder = exe, folder

    def run(self, records):
        """records: list of (op, payload bytes). Returns one output line per record."""
        data = b"".join(op.encode() + struct.pack("<I", len(p)) + p for op, p in records)
        proc = subprocess.run([self.exe, self.folder], input=data, capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"FAIL: {self.exe} {self.folder} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
        lines = proc.stdout.decode().split("\n")[:-1]
        if len(lines) != len(records):
            sys.exit(f"FAIL: tok_batch answered {len(lines)} lines for {len(records)} records")
        return lines

    def encode(self, texts):
        out = []
        for line in self.run([("E", t) for t in texts]):
            out.append(line if line.startswith("ERR") else [int(v) for v in line.split()])
        return out

    def pieces(self, texts):
        return [[int(v) for v in line.split()] for line in self.run([("P", t) for t in texts])]

    def decode(self, id_lists, op="D"):
        recs = [(op, struct.pack(f"<{len(ids)}i", *ids)) for ids in id_lists]
        return [line if line.startswith("ERR") else bytes.fromhex(line) for line in self.run(recs)]


def reference_tokenizer(vocab, merges):
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return tok


# ---------------------------------------------------------------------------
# Text generators.

CATEGORIES = {}


def code_points_by_category():
    if not CATEGORIES:
        for c in all_code_points():
            CATEGORIES.setdefault(unicodedata.category(chr(c)), []).append(c)
    return CATEGORIES


SCRIPTS = [
    "Ελληνικά κείμενα", "Русский текст, ёжик", "עברית טקסט", "العربية نص", "हिन्दी पाठ क्षत्रिय",
    "ภาษาไทย", "한국어 텍스트", "日本語のテキスト、カタカナ", "中文文本，标点。", "Tiếng Việt có dấu",
    "ქართული", "Հայերեն", "ᐊᓂᔑᓈᐯᒧᐎᓐ", "ⴰⵣⵓⵍ", "𐌰𐌱𐌲 gothic", "e\u0301te\u0301 a\u0300\u0301\u0302\u0303",
    "Z\u0351\u0362a\u0353l\u0359g\u0330o", "ﬁ ﬂ Ǆ ǅ ǆ", "ß ẞ İ ı", "\u0928\u093f\u0939\u093e\u0930",
]
EMOJI = [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇺🇸", "1️⃣", "❤️", "🧑🏿‍💻", "🤷‍♀️", "✌🏻", "🫠",
    "🐈‍⬛", "👩🏼‍❤️‍💋‍👨🏾", "☺", "✨", "🔥🔥🔥",
]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\n\n", "\u00a0", "\u3000", "\u2028", "\u2029", "\u0085",
              "\u000b", "\u000c", "\u1680", "\u2007", "\u202f", "\u205f", "\u200b", "\u180e", "\ufeff"]
CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (i = 0; i < n; i++) { a[i] += b[i]*c; }",
    "    if x != None and y >= 3:\n        pass\n\n\n",
    "<div class=\"a\">&nbsp;&amp;</div>",
    "SELECT * FROM t WHERE id = 'x';",
    "x = {'a': [1, 2.5e-3, -7], \"b\": None}",
    "#include <stdio.h>\r\n",
    "$ ls -la | grep '^d' > /dev/null 2>&1",
    "λx.x → ∀y∈ℕ: y≥0",
]
NUMBERS = ["12345", "3.14159", "1,000,000", "-42", "0x1F", "1e10", "٣٤٥", "१२३", "½ ¾ ⅞", "² ³ ¹",
           "① ② ③", "Ⅻ ⅻ", "𝟘𝟙𝟚", "2024-05-01", "10:30pm", "$100.00", "99%"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D",
                "’s", "''", "'", "'x", "'1", " 's", "'  s"]
WORDS = ["the", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "I", "don", "can",
         "they", "we", "hello", "world", "GPT", "token", "izer", "a", "x", "ünïcödé", "naïve", "café"]
SPECIAL = ["<|endoftext|>", "<|endoftext|><|endoftext|>", " <|endoftext|> ", "<|endoftext", "|endoftext|>",
           "<|endoftext|>\n", "<<|endoftext|>>", "<|ENDOFTEXT|>"]


def random_char(rng):
    cats = code_points_by_category()
    cat = rng.choice(sorted(k for k in cats if k != "Cs"))
    return chr(rng.choice(cats[cat]))


def gen_unicode(rng):
    out = []
    for _ in range(rng.randint(1, 40)):
        r = rng.random()
        if r < 0.5:
            out.append(random_char(rng))
        elif r < 0.7:
            out.append(rng.choice("abcXYZ019 "))
        else:
            out.append(rng.choice(WHITESPACE))
    return "".join(out)


def gen_whitespace(rng):
    out = []
    for _ in range(rng.randint(1, 12)):
        out.append("".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 6))))
        if rng.random() < 0.7:
            out.append(rng.choice(WORDS + NUMBERS + ["!", "...", "'s"]))
    return "".join(out)


def gen_mixed(rng):
    pools = [SCRIPTS, EMOJI, WHITESPACE, CODE, NUMBERS, CONTRACTIONS, WORDS, SPECIAL]
    out = []
    for _ in range(rng.randint(1, 15)):
        pool = rng.choice(pools)
        out.append(rng.choice(pool))
        if rng.random() < 0.5:
            out.append(rng.choice([" ", "", "\n", "  ", "\t"]))
        if rng.random() < 0.1:
            out.append(random_char(rng))
    return "".join(out)


def gen_contractions(rng):
    out = []
    for _ in range(rng.randint(1, 10)):
        out.append(rng.choice(WORDS))
        out.append(rng.choice(CONTRACTIONS))
        out.append(rng.choice([" ", "", "  ", "\n", "!", "'"]))
    return "".join(out)


def gen_emoji(rng):
    return "".join(rng.choice(EMOJI) + rng.choice(["", " ", "  ", "a", "\u200d", "\ufe0f"])
                   for _ in range(rng.randint(1, 8)))


def gen_code(rng):
    return "".join(rng.choice(CODE) for _ in range(rng.randint(1, 4)))


def gen_invalid_utf8(rng):
    """Bytes, not str: valid text with invalid sequences spliced in, or noise."""
    bad = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
           b"\xf4\x90\x80\x80", b"\xf5\x80", b"\xff", b"\xfe", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf0\x9f",
           b"\xc3", b"\xe0\xa0", b"\xf0\x90", b"\xf8\x88\x80\x80\x80", b"\xe2\x28\xa1", b"\x00"]
    if rng.random() < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    out = []
    for _ in range(rng.randint(1, 8)):
        out.append(gen_mixed(rng).encode() if rng.random() < 0.5 else rng.choice(bad))
    return b"".join(out)


GENERATORS = [gen_unicode, gen_whitespace, gen_mixed, gen_contractions, gen_emoji, gen_code]


def generate(seed, n_texts):
    rng = random.Random(seed)
    texts = []
    for i in range(n_texts):
        if i % 15 == 14:
            texts.append(gen_invalid_utf8(rng))
        else:
            texts.append(rng.choice(GENERATORS)(rng).encode())
    return texts


def fixed_texts():
    base = ["", "Hello world", " Hello  world ", "\n", "   ", "a\n\n\nb", "  \n  x", "x  ", "x \n",
            "I'm I'M he's HE'S we'll WE'LL you're YOU'RE they've I'd", "don't DON'T", "'s's's",
            "<|endoftext|>", "a<|endoftext|>b", "\x00", "a\x00b \x00\x00 c", "\u00a0\u00a0x", "\u0085x",
            "x\u2028y", "\u3000\u3000z", "\u180e\u180ex", "\ufeffBOM", "½+¾=1¼", "٣٤٥ 123", "Ⅻ", "🤷‍♀️"]
    texts = [t.encode() for t in base + SCRIPTS + EMOJI + CODE + NUMBERS + SPECIAL]
    texts.append(("word " * 5000).encode())
    texts.append(("a" * 3000 + " " * 3000 + "1" * 3000 + "!" * 3000).encode())
    return texts


# ---------------------------------------------------------------------------

class Failures:
    def __init__(self, seeds):
        self.count, self.seeds = 0, seeds

    def report(self, what, text, want, got):
        self.count += 1
        if self.count <= 5:
            print(f"MISMATCH ({what}), seeds {self.seeds}")
            print(f"  input: {text!r}")
            print(f"  reference: {want}")
            print(f"  gptc:      {got}")


def to_str(b):
    return b.decode("utf-8", errors="replace")


def compare_encodings(name, ref, batch, texts, fails):
    got = batch.encode(texts)
    want = [e.ids for e in ref.encode_batch([to_str(t) for t in texts], add_special_tokens=False)]
    for t, w, g in zip(texts, want, got):
        if w != g:
            fails.report(f"encode via {name}", t, w, g)
    return sum(len(w) for w in want)


def compare_pieces(batch, texts, fails, what):
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text, got in zip(texts, batch.pieces([t.encode() for t in texts])):
        want, pos = [], 0
        for piece, _ in pre.pre_tokenize_str(text):
            pos += len(piece)  # byte-level: one character per byte
            want.append(pos)
        if want != got:
            k = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            at = min(want[k:k + 1] + got[k:k + 1] + [len(text.encode())])
            lo = max(0, at - 30)
            fails.report(what, to_str(text.encode()[lo:lo + 60]), want[k:k + 4], got[k:k + 4])


def sweep_code_points(batch, rng, fails):
    """
    Every code point, classified by the reference: the letters, the numbers,
    the spaces and all the others each form one text, framed by a character of
    another class. The reference cuts each into exactly three pieces; a code
    point that gptc classes differently cuts its text further. Then a random
    sample of code points in contexts where each class joins a different
    neighbour ("a c", "1 c", "! c", " c").
    """
    classes = [set(c for lo, hi in reference_class_ranges(p) for c in range(lo, hi + 1))
               for p in (r"\p{L}", r"\p{N}", r"\s")]
    cps = all_code_points()
    other = [c for c in cps if not any(c in k for k in classes)]
    runs = [sorted(classes[0]), sorted(classes[1]), sorted(classes[2]), other]
    frames = ["1", "x", "x", "x"]
    texts = [f + "".join(map(chr, run)) + f for f, run in zip(frames, runs)]
    compare_pieces(batch, texts, fails, "pre-tokenizer classes (regenerate src/unicode.c with --emit-unicode-tables?)")
    sample = rng.sample(cps, 20000)
    texts = ["".join(f"a{c}1{c}!{c} {c}x{c}\n" for c in map(chr, sample[i:i + 1000])) for i in range(0, len(sample), 1000)]
    compare_pieces(batch, texts, fails, "pre-tokenizer pieces")
    return len(cps), len(sample)


def random_id_lists(rng, n_vocab, count):
    byte_ids = list(range(188, 256)) + list(range(94, 188))  # many single-byte tokens sit here
    lists = []
    for _ in range(count):
        ids = []
        for _ in range(rng.randint(0, 20)):
            r = rng.random()
            ids.append(rng.randrange(n_vocab) if r < 0.6 else rng.choice(byte_ids) if r < 0.95 else n_vocab - 1)
        lists.append(ids)
    return lists


def check_cli(folder, ref, fails):
    exe = os.environ.get("GPTC_BIN", "")
    if not exe or not os.access(exe, os.X_OK):
        print("note: GPTC_BIN not set or not executable; CLI check skipped")
        return
    texts = ["Hello world", "I'm here  \n\tnow", "<|endoftext|>x", "日本語 😀", "a 'S 'll"]
    for t in texts:
        try:
            p = subprocess.run([exe, "tokenize", "-m", folder], input=t.encode(), capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"note: {exe} tokenize failed to run ({e}); CLI check skipped")
            return
        if p.returncode != 0:
            print(f"note: {exe} tokenize exited {p.returncode} ({p.stderr.decode(errors='replace').strip()[:200]}); CLI check skipped")
            return
        got = [int(v) for v in p.stdout.split()]
        want = ref.encode(t, add_special_tokens=False).ids
        if got != want:
            fails.report("CLI tokenize", t, want, got)
    print(f"CLI: {len(texts)} texts checked through {exe} tokenize")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, help="replay with this seed instead of a fresh one")
    ap.add_argument("--texts", type=int, default=3000, help="generated texts per seed")
    ap.add_argument("--emit-unicode-tables", action="store_true")
    args = ap.parse_args()
    if args.emit_unicode_tables:
        emit_unicode_tables()
        return 0

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"seeds: fixed {FIXED_SEED}, fresh {seed} (replay: {sys.argv[0]} --seed {seed})", flush=True)
    exe = os.environ.get("GPTC_TOK_BATCH")
    shared = os.environ.get("GPTC_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
    if not exe:
        sys.exit("FAIL: GPTC_TOK_BATCH is not set (run through ctest)")
    folder = os.path.join(shared, "data", "gpt2-tokenizer")
    vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
    ref = reference_tokenizer(vocab, merges)
    fails = Failures((FIXED_SEED, seed))
    batch = Batch(exe, folder)

    t0 = time.time()
    n_all, n_sample = sweep_code_points(batch, random.Random(seed), fails)
    print(f"pre-tokenizer: classes of all {n_all} code points, {n_sample} in context ({time.time() - t0:.1f} s)",
          flush=True)

    texts = fixed_texts() + generate(FIXED_SEED, args.texts) + generate(seed, args.texts)
    n_tokens = compare_encodings("vocab.json+merges.txt", ref, batch, texts, fails)
    print(f"encode: {len(texts)} texts, {n_tokens} tokens compared", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        # tokenizer.json as tokenizers writes it now (merges as pairs) and in the legacy form.
        new_dir, old_dir, extra_dir = (os.path.join(tmp, d) for d in ("new", "old", "extra"))
        for d in (new_dir, old_dir, extra_dir):
            os.mkdir(d)
        ref.save(os.path.join(new_dir, "tokenizer.json"))
        with open(os.path.join(new_dir, "tokenizer.json")) as f:
            doc = json.load(f)
        doc["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
        with open(os.path.join(old_dir, "tokenizer.json"), "w") as f:
            json.dump(doc, f)
        sample = texts[:: max(1, len(texts) // 1500)]
        for d in (new_dir, old_dir):
            compare_encodings(os.path.basename(d) + " tokenizer.json", ref, Batch(exe, d), sample, fails)

        # Added tokens beyond GPT-2's: normalized or not, stripping whitespace or not.
        extra = reference_tokenizer(vocab, merges)
        extra.add_tokens([AddedToken("<sep>", lstrip=True, rstrip=True, normalized=True),
                          AddedToken("hello world", normalized=False),
                          AddedToken("<sep2>", lstrip=False, rstrip=True, normalized=False),
                          AddedToken("wor", normalized=True)])
        extra.add_special_tokens([AddedToken("<|im_start|>", lstrip=True, normalized=False)])
        extra.save(os.path.join(extra_dir, "tokenizer.json"))
        rng = random.Random(seed)
        pieces = ["<sep>", "hello world", "<sep2>", "wor", "<|im_start|>", "<|endoftext|>", " ", "  ", "\n",
                  "\u3000", "world", "hello", "x", "<sep", "hello worl"]
        extra_texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 10))).encode() for _ in range(500)]
        compare_encodings("tokenizer.json with extra added tokens", extra, Batch(exe, extra_dir), extra_texts, fails)
        # A vocabulary missing most bytes: unknown bytes become unk_token, fused or not.
        unk_dir = os.path.join(tmp, "unk")
        os.mkdir(unk_dir)
        for fuse in (False, True):
            doc = json.loads(reference_tokenizer(vocab, merges).to_str())
            doc["added_tokens"] = []
            doc["model"].update(unk_token="<unk>", fuse_unk=fuse, merges=["a b", "\u0120 a"],
                                vocab={"<unk>": 0, "a": 1, "b": 2, "ab": 3, "\u0120": 4, "\u0120a": 5})
            with open(os.path.join(unk_dir, "tokenizer.json"), "w") as f:
                json.dump(doc, f)
            compare_encodings(f"tokenizer.json with unk_token, fuse_unk={fuse}", Tokenizer.from_str(json.dumps(doc)),
                              Batch(exe, unk_dir), sample[:300] + [b"ab xyab  a\xc3\xa9b"], fails)
        print(f"tokenizer.json: {2 * len(sample)} texts through two merge formats, "
              f"{len(extra_texts)} with extra added tokens, 600 with an unk token", flush=True)

    n_vocab = ref.get_vocab_size()
    id_lists = random_id_lists(random.Random(seed), n_vocab, 3000)
    want = [ref.decode(ids, skip_special_tokens=False).encode() for ids in id_lists]
    for op, name in (("D", "decode"), ("S", "streaming detokenizer")):
        for ids, w, g in zip(id_lists, want, batch.decode(id_lists, op)):
            if w != g:
                fails.report(name, ids, w, g)
    bad = batch.decode([[n_vocab], [-1], [0, 50257]])
    if not all(isinstance(b, str) and b.startswith("ERR 5 ") for b in bad):
        fails.report("decode of out-of-range ids must be GPTC_ERR_RANGE", [[n_vocab], [-1]], "ERR 5", bad)
    print(f"decode: {len(id_lists)} random id sequences, decode and streaming", flush=True)

    check_cli(folder, ref, fails)

    bench_file = os.path.join(shared, "data", "tinyshakespeare.txt")
    p = subprocess.run([exe, "--bench", bench_file, folder], capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        fails.report("benchmark run", bench_file, "exit 0", p.returncode)
    else:
        seconds = float(p.stdout)
        print(f"speed: 1 MB of English in {seconds:.3f} s ({1.048576 / seconds:.1f} MB/s)")
        if seconds >= 1.0:
            fails.report("speed", bench_file, "< 1 s", f"{seconds:.3f} s")

    if fails.count:
        print(f"FAIL: {fails.count} mismatches (seeds: fixed {FIXED_SEED}, fresh {seed})")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
