#!/usr/bin/env python3
"""The Python package (python/gptc) against the CLI, on the fixtures with the
GPT-2 tokenizer: generate() ids and text equal `gptc generate` for the same
arguments (greedy, sampling with a seed, processors, stop strings), the stream
concatenates to generate()'s text and stops when left early, tokenizer round
trips, perplexity equals `gptc perplexity`, errors carry the library's
message, the ctypes structures match gptc.h, and pip installs the package.

Env: GPTC_LIBRARY (build's libgptc.so), GPTC_BIN (the CLI), GPTC_ROOT,
GPTC_ABI_LAYOUT (tests/py_abi_layout.c, built), GPTC_LSAN_CHECK=1 in the
sanitizer build (leak check of this process before it exits).
"""
import ctypes
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.dont_write_bytecode = True
ROOT = os.environ.get("GPTC_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
import gptc  # noqa: E402
from gptc import _capi  # noqa: E402

BIN = os.environ.get("GPTC_BIN", os.path.join(ROOT, "build", "gptc"))
FIX = os.path.join(ROOT, "tests", "fixtures")
GPT2 = os.path.join(FIX, "gpt2vocab-f16")                 # V 50257, n_positions 128, vocab.json + merges.txt
TOKJSON = os.path.join(FIX, "gpt2vocab-tokjson-orig-bf16")  # V 50257, n_positions 256, tokenizer.json
EOSLIST = os.path.join(FIX, "eoslist-f16-gelu_new")       # V 512, eos [415, 381], max_new_tokens 24, no tokenizer
PPL = os.path.join(FIX, "ppl.txt")
THREADS = ["--threads", "1"]
PROMPT = "Hello, my name is"
TEXT = "Hello world! The quick brown fox, 1234 times.\n  Ünïcödé: 🙂 日本語 <|endoftext|> end\n\x00tab\t"


LSAN = os.environ.get("GPTC_LSAN_CHECK") == "1"  # the sanitizer build


def cli(*args, stdin=None):
    env = dict(os.environ)
    if LSAN:  # the CLI is a sanitized executable: its own leak check at exit
        env["ASAN_OPTIONS"] = "detect_leaks=1"
        for k in ("LD_PRELOAD", "LSAN_OPTIONS"):
            env.pop(k, None)
    return subprocess.run([BIN] + list(args), input=stdin, capture_output=True, timeout=300, env=env)


def cli_ids(*args):
    r = cli("generate", *args, "--ids", *THREADS)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


def cli_text(*args):
    r = cli("generate", *args, *THREADS)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode("utf-8")


def cli_error(*args):
    """The library message the CLI prints after 'gptc: '."""
    r = cli(*args)
    assert r.returncode != 0
    line = r.stderr.decode().strip()
    assert line.startswith("gptc: "), line
    return line[len("gptc: "):]


class GptcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = gptc.Model(GPT2, threads=1)

    @classmethod
    def tearDownClass(cls):
        cls.model.close()

    # ---- the library and its declarations ----

    def test_library_from_env(self):
        if os.environ.get("GPTC_LIBRARY"):
            self.assertEqual(os.path.realpath(gptc.library_path), os.path.realpath(os.environ["GPTC_LIBRARY"]))

    def test_abi_layout_matches_header(self):
        exe = os.environ.get("GPTC_ABI_LAYOUT")
        if not exe:
            self.skipTest("GPTC_ABI_LAYOUT not set")
        c = json.loads(subprocess.run([exe], capture_output=True, check=True).stdout)
        for name, cls in (("gptc_config", _capi.CConfig), ("gptc_model_params", _capi.CModelParams),
                          ("gptc_generate_params", _capi.CGenerateParams), ("gptc_batch_params", _capi.CBatchParams)):
            self.assertEqual(ctypes.sizeof(cls), c[name]["sizeof"], name)
            py = {f[0]: getattr(cls, f[0]).offset for f in cls._fields_}
            self.assertEqual(py, c[name]["fields"], name)
        self.assertEqual(ctypes.sizeof(ctypes.c_int), c["sizeof_gptc_dtype"])
        self.assertEqual(ctypes.sizeof(ctypes.c_int), c["sizeof_gptc_status"])
        self.assertEqual(ctypes.sizeof(ctypes.c_int), c["sizeof_gptc_early_stopping"])

    def test_version_matches_header(self):
        with open(os.path.join(ROOT, "include", "gptc.h")) as f:
            self.assertIn('#define GPTC_VERSION "%s"' % gptc.__version__, f.read())

    # ---- config ----

    def test_config(self):
        with open(os.path.join(GPT2, "config.json")) as f:
            hf = json.load(f)
        c = self.model.config
        for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon",
                  "activation_function", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
                  "reorder_and_upcast_attn", "bos_token_id", "eos_token_id"):
            self.assertEqual(getattr(c, k), hf[k], k)
        self.assertEqual(c.n_inner, 4 * hf["n_embd"])
        self.assertEqual(c.dtype, "float16")
        self.assertEqual(c.to_dict()["vocab_size"], 50257)
        self.assertEqual(self.model.backend, "cpu" if "cuda" not in self.model.backend else "cuda")
        self.assertEqual(self.model.threads, 1)
        g = self.model.generation_config
        self.assertEqual((g.max_new_tokens, g.max_length, g.do_sample, g.top_k, g.eos_token_id),
                         (None, 20, False, 50, [50256]))

    def test_generation_config_eos_list(self):
        with gptc.Model(EOSLIST, threads=1) as m:
            self.assertEqual(m.generation_config.eos_token_id, [415, 381])
            self.assertEqual(m.generation_config.max_new_tokens, 24)
            # No tokenizer in this folder: ids work, text says what is missing.
            ids = m.generate([5, 17, 300], return_ids=True)
            self.assertEqual(ids, cli_ids("-m", EOSLIST, "--prompt-ids", "5,17,300"))
            self.assertLessEqual(len(ids), 24)
            with self.assertRaises(gptc.FileError) as e:
                m.generate([5, 17, 300])
            self.assertIn("no tokenizer found", str(e.exception))
            self.assertEqual(str(e.exception), cli_error("tokenize", "-m", EOSLIST))

    # ---- tokenizer ----

    def test_tokenizer_round_trip(self):
        tok = self.model.tokenizer
        ids = tok.encode(TEXT)
        r = cli("tokenize", "-m", GPT2, stdin=TEXT.encode())
        self.assertEqual(ids, [int(x) for x in r.stdout.split()])
        self.assertEqual(ids[:2], [15496, 995])
        self.assertIn(50256, ids)
        self.assertEqual(tok.decode(ids), TEXT)
        self.assertEqual(tok.encode(TEXT.encode()), ids)
        self.assertEqual(tok.encode(""), [])
        self.assertEqual(tok.decode([]), "")
        self.assertEqual((len(tok), tok.eos_token_id), (50257, 50256))
        # Invalid UTF-8 in: U+FFFD, as bytes.decode("utf-8", "replace").
        bad = b"ab\xff\xe2\x80 cd"
        self.assertEqual(tok.decode(tok.encode(bad)), bad.decode("utf-8", "replace"))
        # A character split over two tokens: whole when both are there, U+FFFD alone.
        halves = tok.encode("\u2019")
        self.assertEqual(len(halves), 2)
        self.assertEqual(tok.decode(halves), "\u2019")
        self.assertEqual(tok.decode(halves[:1]), "\ufffd")
        self.assertEqual(tok.token_bytes(halves[0]) + tok.token_bytes(halves[1]), "\u2019".encode())

    def test_tokenizer_json_agrees(self):
        with gptc.Tokenizer(TOKJSON) as t:
            self.assertEqual(t.encode(TEXT), self.model.tokenizer.encode(TEXT))
            self.assertEqual(t.decode(t.encode(TEXT)), TEXT)
        with self.assertRaises(gptc.ClosedError):
            t.encode("x")

    # ---- generate against the CLI ----

    CASES = [
        ("greedy", dict(do_sample=False), ["--greedy"]),
        ("sampling with a seed", dict(do_sample=True, seed=7), ["--do-sample", "--seed", "7"]),
        ("top-k, top-p, temperature", dict(do_sample=True, top_k=40, top_p=0.9, temperature=0.7, seed=3),
         ["--do-sample", "--top-k", "40", "--top-p", "0.9", "--temperature", "0.7", "--seed", "3"]),
        ("unrestricted sampling", dict(do_sample=True, top_k=0, seed=11),
         ["--do-sample", "--top-k", "0", "--seed", "11"]),
        ("repetition penalty, no-repeat-ngram", dict(do_sample=False, repetition_penalty=1.5,
                                                     no_repeat_ngram_size=2),
         ["--greedy", "--repetition-penalty", "1.5", "--no-repeat-ngram-size", "2"]),
        ("min_new_tokens", dict(do_sample=True, seed=5, min_new_tokens=30),
         ["--do-sample", "--seed", "5", "--min-new-tokens", "30"]),
    ]

    def test_generate_equals_cli(self):
        for name, kw, flags in self.CASES:
            with self.subTest(name):
                args = ["-m", GPT2, "--prompt", PROMPT, "--max-new-tokens", "40"] + flags
                ids = self.model.generate(PROMPT, max_new_tokens=40, return_ids=True, **kw)
                self.assertEqual(ids, cli_ids(*args))
                text = self.model.generate(PROMPT, max_new_tokens=40, **kw)
                self.assertEqual(text, cli_text(*args))
                eos = self.model.generation_config.eos_token_id
                self.assertEqual(text, self.model.tokenizer.decode([i for i in ids if i not in eos]))
        # Seeds: same seed, same ids; another seed, other ids.
        a = self.model.generate(PROMPT, max_new_tokens=30, do_sample=True, seed=1, return_ids=True)
        self.assertEqual(a, self.model.generate(PROMPT, max_new_tokens=30, do_sample=True, seed=1, return_ids=True))
        self.assertNotEqual(a, self.model.generate(PROMPT, max_new_tokens=30, do_sample=True, seed=2,
                                                   return_ids=True))

    def test_generate_defaults_and_prompt_ids(self):
        ids = self.model.tokenizer.encode(PROMPT)
        # Defaults: generation_config (greedy, max_length 20 in all).
        out = self.model.generate(ids, return_ids=True)
        self.assertEqual(out, cli_ids("-m", GPT2, "--prompt-ids", ",".join(map(str, ids))))
        self.assertEqual(len(out), 20 - len(ids))
        self.assertEqual(self.model.generate(PROMPT, return_ids=True), out)
        self.assertEqual(len(self.model.generate(PROMPT, max_length=12, return_ids=True)), 12 - len(ids))
        self.assertEqual(self.model.generate(PROMPT, max_new_tokens=0, return_ids=True), [])
        self.assertEqual(self.model.generate(PROMPT, max_new_tokens=0), "")

    def test_stop_strings(self):
        kw = dict(max_new_tokens=40, do_sample=True, top_k=0, seed=11)
        full = self.model.generate(PROMPT, **kw)
        words = [w for w in full.split() if len(w) >= 3 and w.isalpha()]
        self.assertTrue(words, full)
        stop = words[len(words) // 2][:3]
        args = ["-m", GPT2, "--prompt", PROMPT, "--max-new-tokens", "40", "--do-sample", "--top-k", "0",
                "--seed", "11", "--stop", stop]
        cut = self.model.generate(PROMPT, stop=stop, **kw)
        self.assertIn(stop, cut)
        self.assertLess(len(cut), len(full))
        self.assertTrue(full.startswith(cut))
        self.assertEqual(cut, cli_text(*args))
        self.assertEqual(self.model.generate(PROMPT, stop=[stop, "\x01never"], return_ids=True, **kw),
                         cli_ids(*args))
        self.assertEqual("".join(self.model.stream(PROMPT, stop=stop, **kw)), cut)

    def test_eos_override(self):
        greedy = self.model.generate(PROMPT, max_new_tokens=30, return_ids=True)
        stop_at = greedy[5]
        out = self.model.generate(PROMPT, max_new_tokens=30, eos_token_id=stop_at, return_ids=True)
        self.assertEqual(out, greedy[:greedy.index(stop_at) + 1])
        self.assertEqual(self.model.generate(PROMPT, max_new_tokens=30, eos_token_id=[], return_ids=True), greedy)

    # ---- streaming ----

    def test_stream_concatenates_to_generate(self):
        for name, kw, _ in self.CASES:
            with self.subTest(name):
                s = self.model.stream(PROMPT, max_new_tokens=40, **kw)
                pieces = list(s)
                self.assertTrue(all(isinstance(p, str) and p for p in pieces))
                self.assertEqual("".join(pieces), self.model.generate(PROMPT, max_new_tokens=40, **kw))
                self.assertEqual(s.ids, self.model.generate(PROMPT, max_new_tokens=40, return_ids=True, **kw))

    def test_stream_early_break_stops_generation(self):
        before = threading.active_count()
        interval = sys.getswitchinterval()
        # This thread keeps the GIL until it blocks, so the worker cannot run
        # ahead between the first piece and the break: the stop is what ends it.
        sys.setswitchinterval(100)
        try:
            with gptc.Model(TOKJSON, threads=1) as m:
                s = m.stream([464], max_new_tokens=250, do_sample=True, top_k=0, seed=1, eos_token_id=[])
                for i, _ in enumerate(s):
                    if i == 1:
                        break
                s.close()
                self.assertLess(len(s.ids), 20)
                self.assertEqual(threading.active_count(), before + 1)  # the model's worker, idle
                # The model is free again at once; a whole run gives all 250.
                self.assertEqual(len(m.generate([464], max_new_tokens=250, eos_token_id=[], return_ids=True)), 250)
                # A stream dropped without close() is stopped by the garbage collector.
                s = m.stream([464], max_new_tokens=250, eos_token_id=[])
                next(s)
                ids = s.ids
                del s
                gc.collect()
                self.assertLess(len(ids), 20)
                # close() of the model stops a stream in flight.
                s = m.stream([464], max_new_tokens=250, eos_token_id=[])
                next(s)
            list(s)  # what came before the stop, then the end
            self.assertLess(len(s.ids), 250)
        finally:
            sys.setswitchinterval(interval)
        self.assertEqual(threading.active_count(), before)

    def test_stream_not_started_is_harmless(self):
        s = self.model.stream(PROMPT, max_new_tokens=5)
        s.close()
        s.close()
        self.assertEqual(list(s), [])

    def test_concurrent_calls(self):
        want = self.model.generate(PROMPT, max_new_tokens=20, do_sample=True, seed=9, return_ids=True)
        got = [None] * 4

        def work(k):
            got[k] = self.model.generate(PROMPT, max_new_tokens=20, do_sample=True, seed=9, return_ids=True)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(got, [want] * 4)

    # ---- perplexity ----

    def test_perplexity_equals_cli(self):
        with open(PPL, encoding="utf-8") as f:
            text = f.read()[:1500]  # ~400 tokens: several windows of 128, not too slow under ASan
        fd, path = tempfile.mkstemp(suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            for stride in (None, 100):
                with self.subTest(stride=stride):
                    extra = ["--stride", str(stride)] if stride else []
                    r = cli("perplexity", "-m", GPT2, "--file", path, *THREADS, *extra)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    want = float(r.stdout.decode().strip().splitlines()[-1].split()[-1])
                    got = self.model.perplexity(text, stride=stride)
                    self.assertAlmostEqual(got / want, 1.0, places=8)
        finally:
            os.remove(path)
        ids = self.model.tokenizer.encode(text)
        self.assertGreater(len(ids), 3 * 128)
        self.assertEqual(self.model.perplexity(ids, stride=100), self.model.perplexity(text, stride=100))

    # ---- errors carry the library's message ----

    def test_errors(self):
        m = self.model
        cases = [
            (lambda: gptc.Model("/nonexistent/model"), gptc.FileError,
             cli_error("generate", "-m", "/nonexistent/model", "--prompt", "x")),
            (lambda: gptc.Model(m.path, backend="cpu", device=1), gptc.ArgumentError,
             cli_error("generate", "-m", m.path, "--backend", "cpu", "--device", "1", "--prompt", "x")),
            (lambda: m.generate(PROMPT, temperature=-1.0, do_sample=True), gptc.ArgumentError,
             "temperature: -1 must be a finite number >= 0"),
            (lambda: m.generate(PROMPT, top_p=1.5), gptc.ArgumentError, "top_p: 1.5 is outside (0, 1]"),
            (lambda: m.generate(PROMPT, repetition_penalty=0), gptc.ArgumentError,
             "repetition_penalty: 0 must be a finite number > 0"),
            (lambda: m.generate(PROMPT, top_k=-3), gptc.ArgumentError, "top_k: -3 is negative"),
            (lambda: m.generate([15496, 50257]), gptc.RangeError,
             "prompt: token id 50257 is out of range [0, 50257)"),
            (lambda: m.generate([-1]), gptc.RangeError, "prompt: token id -1 is out of range [0, 50257)"),
            (lambda: m.generate([1] * 100, max_new_tokens=40), gptc.RangeError,
             "prompt: 100 tokens + max_new_tokens 40 exceed n_positions = 128 (truncation is opt-in)"),
            (lambda: m.generate(PROMPT, stop=""), gptc.ArgumentError, "stop string 1 is empty"),
            (lambda: m.tokenizer.decode([15496, 99999]), gptc.RangeError,
             "gptc_tokenizer_decode: token id 99999 (at position 1) is out of range [0, 50257)"),
            (lambda: m.perplexity([1]), gptc.ArgumentError,
             "perplexity: the text has 1 tokens, at least 2 needed"),
            (lambda: m.perplexity([1, 2, 3], stride=0), gptc.ArgumentError,
             "stride: 0 is outside [1, n_positions = 128]"),
            (lambda: m.perplexity([1, 2, 50257]), gptc.RangeError, "token id 50257 is out of range [0, 50257)"),
            (lambda: m.generate([]), gptc.ArgumentError, "prompt: empty"),
            (lambda: gptc.Tokenizer(EOSLIST), gptc.FileError, cli_error("tokenize", "-m", EOSLIST)),
        ]
        for call, cls, msg in cases:
            with self.subTest(msg):
                with self.assertRaises(cls) as e:
                    call()
                self.assertIsInstance(e.exception, gptc.Error)
                self.assertEqual(str(e.exception), msg)
                self.assertEqual(e.exception.message, msg)
                self.assertEqual(e.exception.status, cls.status)
        # The built-in classes they also are.
        self.assertTrue(issubclass(gptc.FileError, OSError))
        self.assertTrue(issubclass(gptc.ArgumentError, ValueError))
        self.assertTrue(issubclass(gptc.RangeError, ValueError))
        self.assertTrue(issubclass(gptc.UnsupportedError, NotImplementedError))
        # Found on the Python side (before the library is called).
        for call in (lambda: m.generate(PROMPT, max_new_tokens=-1), lambda: m.generate([2 ** 40]),
                     lambda: m.generate(PROMPT, top_k=2.5), lambda: m.generate(PROMPT, temperature="hot"),
                     lambda: m.generate(PROMPT, seed=-1), lambda: m.generate(""),
                     lambda: m.generate(PROMPT, eos_token_id=list(range(9))),
                     lambda: gptc.Model(GPT2, dtype="f8"), lambda: gptc.Model(GPT2, backend="tpu"),
                     lambda: gptc.Model(GPT2, threads=0)):
            with self.assertRaises(gptc.Error):
                call()
        # Errors of a stream come out of the iteration, and at the call for arguments.
        with self.assertRaises(gptc.ArgumentError):
            m.stream(PROMPT, top_p=0)
        with self.assertRaises(gptc.RangeError):
            list(m.stream([50257]))
        m.generate(PROMPT, max_new_tokens=2)  # still usable

    def test_backend_cuda(self):
        try:
            with gptc.Model(GPT2, backend="cuda", threads=1) as m:
                self.assertEqual(m.backend, "cuda")
                self.assertEqual(len(m.generate(PROMPT, max_new_tokens=10, eos_token_id=[], return_ids=True)), 10)
        except gptc.Error as e:
            self.assertEqual(str(e), cli_error("generate", "-m", GPT2, "--prompt", "x", "--backend", "cuda"))

    def test_num_beams(self):
        # Beam search: the best sequence, as the CLI's --num-beams.
        for nb in (2, 3):
            got = self.model.generate(PROMPT, max_new_tokens=8, num_beams=nb, return_ids=True)
            self.assertEqual(got, cli_ids("-m", GPT2, "--prompt", PROMPT, "--max-new-tokens", "8",
                                          "--num-beams", str(nb)))
            text = self.model.generate(PROMPT, max_new_tokens=8, num_beams=nb)
            self.assertEqual(text, cli_text("-m", GPT2, "--prompt", PROMPT, "--max-new-tokens", "8",
                                            "--num-beams", str(nb)))
            self.assertEqual("".join(self.model.stream(PROMPT, max_new_tokens=8, num_beams=nb)), text)
        with self.assertRaises(gptc.ArgumentError):
            self.model.generate(PROMPT, num_beams=0)
        # num_return_sequences: a list, best first, as the CLI's lines.
        r = cli("generate", "-m", GPT2, "--prompt", PROMPT, "--max-new-tokens", "8", "--num-beams", "3",
                "--num-return-sequences", "3", "--ids", *THREADS)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = [[int(x) for x in line.split()] for line in r.stdout.decode().splitlines()]
        got = self.model.generate(PROMPT, max_new_tokens=8, num_beams=3, num_return_sequences=3, return_ids=True)
        self.assertEqual(len(want), 3)
        self.assertEqual(got, want)
        self.assertEqual(got[0], self.model.generate(PROMPT, max_new_tokens=8, num_beams=3, return_ids=True))
        texts = self.model.generate(PROMPT, max_new_tokens=8, num_beams=3, num_return_sequences=3)
        eos = set(self.model.generation_config.eos_token_id)
        self.assertEqual(texts, [self.model.tokenizer.decode([t for t in g if t not in eos]) for g in got])
        with self.assertRaises(gptc.ArgumentError) as e:
            self.model.generate(PROMPT, num_beams=2, num_return_sequences=3)
        self.assertIn("num_return_sequences", str(e.exception))
        with self.assertRaises(gptc.UnsupportedError) as e:
            self.model.generate(PROMPT, num_beams=2, do_sample=True)
        self.assertIn("do_sample", str(e.exception))

    def test_batch(self):
        # A list of prompts: one batch, each result what the prompt gives alone.
        prompts = ["Hello, my name is", "The", "Once upon a time, in a land far away,"]
        kw = dict(max_new_tokens=9, eos_token_id=[])
        for extra in ({}, dict(do_sample=True, top_k=20, seed=4), dict(repetition_penalty=1.4)):
            alone = [self.model.generate(x, return_ids=True, **kw, **extra) for x in prompts]
            self.assertEqual(self.model.generate(prompts, return_ids=True, **kw, **extra), alone)
            self.assertEqual(self.model.generate(prompts, return_ids=True, batch_size=2, **kw, **extra), alone)
            # fast_decode changes nothing on the CPU (and reaches the library:
            # gptc_batch_params has the field where ctypes puts it)
            self.assertEqual(self.model.generate(prompts, return_ids=True, fast_decode=True, **kw, **extra), alone)
        texts = self.model.generate(prompts, **kw)
        self.assertEqual(texts, [self.model.generate(x, **kw) for x in prompts])
        ids = [self.model.tokenizer.encode(x) for x in prompts]
        self.assertEqual(self.model.generate(ids, return_ids=True, **kw),
                         [self.model.generate(x, return_ids=True, **kw) for x in prompts])
        self.assertEqual(self.model.generate(prompts[:2], return_ids=True, num_beams=2, **kw),
                         [self.model.generate(x, return_ids=True, num_beams=2, **kw) for x in prompts[:2]])
        with self.assertRaises(gptc.ArgumentError) as e:
            self.model.generate(prompts, batch_size=0)
        self.assertIn("batch_size", str(e.exception))
        with self.assertRaises(gptc.ArgumentError) as e:
            self.model.generate("x", batch_size=2)
        self.assertIn("only with a list", str(e.exception))
        with self.assertRaises(gptc.ArgumentError) as e:
            self.model.generate("x", fast_decode=True)
        self.assertIn("fast_decode", str(e.exception))
        with self.assertRaises(gptc.RangeError) as e:
            self.model.generate(prompts, max_new_tokens=50, kv_memory=4096)
        self.assertIn("kv_memory", str(e.exception))
        with self.assertRaises(gptc.ArgumentError):
            self.model.generate(["ok", ""])

    def test_readme_example(self):
        """The README's Python example runs as written (from the repository root)."""
        import contextlib
        import io
        import re
        with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        section = readme[readme.index("\n## Python\n"):]
        code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
        out = io.StringIO()
        cwd = os.getcwd()
        try:
            os.chdir(ROOT)
            with contextlib.redirect_stdout(out):
                exec(compile(code, "README.md", "exec"), {})
        finally:
            os.chdir(cwd)
        self.assertIn("Hello world 2", out.getvalue())

    # ---- Hub model ids ----

    def test_hub_model_id(self):
        """A model id resolves through the Hugging Face cache, as in the CLI
        (offline here: a cache written by hand, HF_HUB_OFFLINE=1)."""
        tmp = tempfile.mkdtemp(prefix="gptc_hub_")
        saved = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
        try:
            commit = "0123456789abcdef0123456789abcdef01234567"
            repo = os.path.join(tmp, "models--org--tiny")
            snap = os.path.join(repo, "snapshots", commit)
            os.makedirs(snap)
            os.makedirs(os.path.join(repo, "refs"))
            with open(os.path.join(repo, "refs", "main"), "w") as f:
                f.write(commit)
            for name in os.listdir(GPT2):
                os.symlink(os.path.join(GPT2, name), os.path.join(snap, name))
            os.environ.update(HF_HUB_CACHE=tmp, HF_HUB_OFFLINE="1")
            want = self.model.generate(PROMPT, max_new_tokens=10, return_ids=True)
            for rev in ("main", commit, None):
                with gptc.Model("org/tiny", threads=1, revision=rev) as m:
                    self.assertEqual(os.path.realpath(m.path), os.path.realpath(snap))
                    self.assertEqual(m.name_or_path, "org/tiny")
                    self.assertEqual(m.generate(PROMPT, max_new_tokens=10, return_ids=True), want)
            with gptc.Tokenizer("org/tiny") as t:
                self.assertEqual(t.encode(TEXT), self.model.tokenizer.encode(TEXT))
            for name, rev in (("org/tiny", "v2"), ("org/missing", "main"), ("bad//id", "main")):
                with self.subTest(name=name, revision=rev):
                    with self.assertRaises(gptc.Error) as e:
                        gptc.Model(name, revision=rev)
                    self.assertEqual(str(e.exception),
                                     cli_error("generate", "-m", name, "--revision", rev, "--prompt", "x"))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- lifetime ----

    def test_close(self):
        m = gptc.Model(GPT2, threads=1)
        tok = m.tokenizer
        m.close()
        m.close()
        self.assertTrue(m.closed and tok.closed)
        with self.assertRaises(gptc.ClosedError):
            m.generate([1, 2])
        with self.assertRaises(gptc.ClosedError):
            m.perplexity([1, 2])
        with self.assertRaises(gptc.ClosedError):
            tok.encode("x")
        with gptc.Model(GPT2, threads=1) as m2:
            self.assertFalse(m2.closed)
        self.assertTrue(m2.closed)
        # A tokenizer given to the model stays the caller's.
        with gptc.Tokenizer(GPT2) as t:
            with gptc.Model(EOSLIST, threads=1, tokenizer=t) as m3:
                self.assertIs(m3.tokenizer, t)
                self.assertIsInstance(m3.generate("a,b.", max_new_tokens=3), str)  # ids < 512
            self.assertFalse(t.closed)
        # Objects dropped without close() are freed by the garbage collector.
        gptc.Model(GPT2, threads=1).generate(PROMPT, max_new_tokens=2)
        gc.collect()


class PipInstallTest(unittest.TestCase):
    """pip installs python/ offline into a fresh venv, as a package with
    libgptc.so inside, and as an editable install that finds the checkout's
    build/libgptc.so."""

    def test_pip_install(self):
        if LSAN:
            self.skipTest("packaging is tested in the normal build")
        lib = os.environ.get("GPTC_LIBRARY") or gptc.library_path
        tmp = tempfile.mkdtemp(prefix="gptc_pip_")
        try:
            venv = os.path.join(tmp, "venv")
            r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], capture_output=True)
            py = os.path.join(venv, "bin", "python")
            if r.returncode != 0 or subprocess.run([py, "-c", "import setuptools, pip"], capture_output=True).returncode != 0:
                self.skipTest("no venv with pip and setuptools here: %s" % r.stderr.decode()[-300:])
            env = dict(os.environ)
            env.pop("GPTC_LIBRARY", None)
            env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
            # Offline (--no-index, --no-build-isolation): setuptools builds the
            # wheel with its own bdist_wheel from 70.1 on, else with the
            # 'wheel' package (Debian's python3-pip brings it), taken from the
            # system site-packages or from a local PIP_FIND_LINKS folder.
            pip = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
            can_wheel = ("import setuptools, sys\ntry:\n import wheel\nexcept ImportError:\n"
                         " sys.exit(tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1))")
            if subprocess.run([py, "-c", can_wheel], env=env, capture_output=True).returncode != 0:
                subprocess.run(pip + ["wheel<0.46"], capture_output=True, env=env)
                if subprocess.run([py, "-c", can_wheel], env=env, capture_output=True).returncode != 0:
                    self.skipTest("pip cannot build a wheel offline here: setuptools < 70.1 and no 'wheel' "
                                  "package (python3-wheel, or one in PIP_FIND_LINKS)")
            probe = ("import gptc; m = gptc.Model(%r, threads=1); "
                     "print(gptc.library_path); print(m.generate('Hi', max_new_tokens=5, do_sample=False))" % GPT2)
            with gptc.Model(GPT2, threads=1) as m:
                want = m.generate("Hi", max_new_tokens=5, do_sample=False)

            # A copy of python/ with libgptc.so put inside the package.
            src = os.path.join(tmp, "repo", "python")
            shutil.copytree(os.path.join(ROOT, "python"), src,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "libgptc.so"))
            pkg = os.path.join(tmp, "pkg")
            shutil.copytree(src, pkg)
            shutil.copy(lib, os.path.join(pkg, "gptc", "libgptc.so"))
            r = subprocess.run(pip + [pkg], capture_output=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
            r = subprocess.run([py, "-c", probe], capture_output=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
            where, text = r.stdout.decode().split("\n", 1)
            self.assertTrue(where.startswith(venv) and where.endswith("gptc/libgptc.so"), where)
            self.assertEqual(text[:-1], want)

            # Editable, from a checkout whose build/ holds the library.
            os.makedirs(os.path.join(tmp, "repo", "build"))
            shutil.copy(lib, os.path.join(tmp, "repo", "build", "libgptc.so"))
            r = subprocess.run(pip + ["-e", src], capture_output=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
            r = subprocess.run([py, "-c", probe], capture_output=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-2000:])
            where = r.stdout.decode().split("\n", 1)[0]
            self.assertEqual(where, os.path.join(tmp, "repo", "build", "libgptc.so"))

            # Nowhere to be found: ImportError naming the places it looked.
            os.remove(os.path.join(tmp, "repo", "build", "libgptc.so"))
            r = subprocess.run([py, "-c", "import gptc"], capture_output=True, env=env, cwd=tmp)
            err = r.stderr.decode()
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("ImportError: gptc: cannot load libgptc.so", err)
            for where in ("$GPTC_LIBRARY (not set)", "the package folder", "build folder", "system loader"):
                self.assertIn(where, err)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def lsan_check():
    """In the sanitizer build: LeakSanitizer over this process once every
    model and tokenizer is closed or collected (a live handle looks leaked: it
    is held in a Python int)."""
    if not LSAN:
        return 0
    gc.collect()
    leaks = ctypes.CDLL(None).__lsan_do_recoverable_leak_check()
    print("LeakSanitizer: %s" % ("leaks found" if leaks else "no leaks"))
    return leaks


if __name__ == "__main__":
    prog = unittest.main(exit=False, verbosity=2)
    rc = 0 if prog.result.wasSuccessful() else 1
    sys.exit(rc or (1 if lsan_check() else 0))
