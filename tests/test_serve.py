#!/usr/bin/env python3
"""`gptc serve` against real clients, on loopback, CPU backend.

The model is tests/fixtures/gpt2vocab-f16 (2 layers, n_embd 16, n_positions
128, the real GPT-2 tokenizer): fast enough for 64 concurrent streams under
the sanitizers. Tests that time things (a cancellation "at once", requests
that must overlap) use the bundled demo model, slow enough per token for
wide margins. Every server is started by this test on a free port (--port 0,
the port read from its first line) and stopped with SIGTERM, which must exit
0 with no sanitizer report.

The references are the CLI (`gptc generate --ids`: greedy and seeded sampling,
the same processors), `gptc logits` plus numpy for OpenAI's presence and
frequency penalties, curl, and the official `openai` package (skipped, and
said so, where it is not installed).

Env: GPTC_BIN (the CLI), GPTC_ROOT, GPTC_SANITIZE=1 in the sanitizer build.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import bytes_to_unicode  # noqa: E402
from serve_client import COUNTS, KEY, check, complete, metrics, request, sanitizer_hit  # noqa: E402

BIN = os.environ.get("GPTC_BIN", "gptc")
ROOT = os.environ.get("GPTC_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODEL = os.path.join(ROOT, "tests", "fixtures", "gpt2vocab-f16")
# The bundled demo model (6 layers, n_positions 512): ~20x slower per token,
# for the tests that time a cancellation or need requests to overlap.
DEMO = os.path.join(ROOT, "models", "shakespeare-demo")
NAME = "fixture-model"
EOS = 50256
N_CTX = 128
SAN = os.environ.get("GPTC_SANITIZE") == "1"
# The servers whose checks depend on the CPU backend's speed (a request
# still running when a timeout or a disconnect comes) or its K/V cache of
# 4-byte values (--kv-memory 1MiB): the CPU on any machine; the rest take the
# default backend (CUDA on the GPU machine).
CPU = ("--backend", "cpu")
P1 = "Hello, my name is"
P2 = "The quick brown fox jumps over"


# ---- the tokenizer's bytes, to decode reference ids into text ----

def load_token_bytes():
    dec = {v: k for k, v in bytes_to_unicode().items()}
    vocab = json.load(open(os.path.join(MODEL, "vocab.json"), encoding="utf-8"))
    out = {i: bytes(dec[c] for c in t) for t, i in vocab.items()}
    out[EOS] = b"<|endoftext|>"
    return out


TOKEN_BYTES = load_token_bytes()


def decode(ids):
    return b"".join(TOKEN_BYTES[i] for i in ids).decode("utf-8", "replace")


# ---- the CLI: references ----

def cli(*args, stdin=None):
    r = subprocess.run([BIN] + list(args), input=stdin, capture_output=True, timeout=600)
    if r.returncode != 0 or sanitizer_hit(r.stderr.decode(errors="replace")):
        raise RuntimeError("gptc %s: %s" % (" ".join(args)[:200], r.stderr.decode(errors="replace")))
    return r.stdout.decode()


_tok_cache = {}


def tokenize(text):
    if text not in _tok_cache:
        _tok_cache[text] = [int(x) for x in cli("tokenize", "-m", MODEL, stdin=text.encode()).split()]
    return list(_tok_cache[text])


class Ref:
    """What a request must return: the CLI's ids, as text, finish_reason and token count."""

    def __init__(self, ids, max_tokens):
        self.ids = ids
        body = ids[:-1] if ids and ids[-1] == EOS else ids
        self.text = decode(body)
        self.finish = "stop" if ids and ids[-1] == EOS else "length"
        self.tokens = len(ids)


_ref_cache = {}


def reference(prompt_ids, max_tokens, seed=None, extra=()):
    """`gptc generate --ids`: greedy, or seeded sampling with OpenAI's defaults
    (temperature 1, no top-k, top-p 1) unless `extra` says otherwise."""
    key = (tuple(prompt_ids), max_tokens, seed, tuple(extra))
    if key not in _ref_cache:
        mode = ["--greedy"] if seed is None else ["--do-sample", "--temperature", "1", "--top-k", "0",
                                                  "--top-p", "1", "--seed", str(seed)]
        out = cli("generate", "-m", MODEL, "--prompt-ids", ",".join(map(str, prompt_ids)), "--max-new-tokens",
                  str(max_tokens), "--ids", "--threads", "1", *mode, *extra)
        _ref_cache[key] = Ref([int(x) for x in out.split()], max_tokens)
    return _ref_cache[key]


# ---- the server ----

class Server:
    def __init__(self, *args, model=MODEL, name=NAME, wait=True):
        cmd = [BIN, "serve", "-m", model, "--served-model-name", name, "--port", "0", "--threads", "2", *args]
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines = []
        self.port = None
        got_port = threading.Event()

        def read():
            for raw in self.p.stderr:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                m = re.search(r"listening on http://\S+:(\d+)/v1", line)
                if m:
                    self.port = int(m.group(1))
                    got_port.set()
            got_port.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        got_port.wait(120)
        if self.port is None:
            raise RuntimeError("gptc serve did not start: %s" % "".join(self.lines))
        if wait:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if request(self.port, "GET", "/health")[0] == 200:
                        return
                except OSError:
                    pass
                time.sleep(0.05)
            raise RuntimeError("gptc serve never became healthy: %s" % "".join(self.lines))

    def stderr(self):
        return "".join(self.lines)

    def stop(self, timeout=120):
        """SIGTERM; the exit status (None if it hung: then killed)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        self.reader.join(10)
        return rc


def parse_sse(data):
    """Server-sent events -> (list of JSON payloads, saw [DONE] last, well-formed)."""
    text = data.decode("utf-8")
    events, done, ok = [], False, text.endswith("\n\n")
    for block in text.split("\n\n"):
        if not block:
            continue
        if not block.startswith("data: ") or done:
            ok = False
            continue
        payload = block[6:]
        if payload == "[DONE]":
            done = True
        else:
            events.append(json.loads(payload))
    return events, done, ok


def stream(port, req, **kw):
    """A streamed completion: (status, events, done, well-formed, content-type)."""
    st, hd, data = request(port, "POST", "/v1/completions", dict(req, stream=True), **kw)
    if st != 200:
        return st, [json.loads(data)], False, False, hd.get("content-type")
    ev, done, ok = parse_sse(data)
    return st, ev, done, ok, hd.get("content-type")


def joined(events, n_choices=1):
    """Per choice: the concatenated text, the finish_reason, the chunk count."""
    texts, finish, chunks = [""] * n_choices, [None] * n_choices, [0] * n_choices
    for e in events:
        for c in e.get("choices", []):
            i = c["index"]
            texts[i] += c["text"]
            chunks[i] += 1
            if c["finish_reason"] is not None:
                finish[i] = c["finish_reason"]
    return texts, finish, chunks


def usage_of(events):
    u = [e["usage"] for e in events if e.get("usage")]
    return u[-1] if u else None


class Ledger:
    """What /metrics must count for the completions this test made."""

    def __init__(self):
        self.ok = 0
        self.generated = 0
        self.prompt = 0

    def add(self, usage, n_choices=1, prompt_tokens_per_choice=None):
        self.ok += 1
        self.generated += usage["completion_tokens"]
        # /metrics counts a prompt once per choice (it is processed per choice)
        self.prompt += prompt_tokens_per_choice if prompt_tokens_per_choice is not None else \
            usage["prompt_tokens"] * n_choices


LEDGER = Ledger()


# ---- the tests ----

def test_routes(port):
    st, _, data = request(port, "GET", "/health", key=None)
    check("GET /health: 200 once loaded, without the API key", st == 200 and json.loads(data) == {"status": "ok"},
          (st, data))
    st, _, data = request(port, "GET", "/v1/models")
    ids = [m["id"] for m in json.loads(data).get("data", [])] if st == 200 else []
    check("GET /v1/models lists the served model", st == 200 and ids == [NAME], (st, data))
    st, _, data = request(port, "GET", "/v1/models/" + NAME)
    check("GET /v1/models/NAME", st == 200 and json.loads(data)["id"] == NAME, (st, data))
    st, _, data = request(port, "GET", "/v1/models/gpt-4")
    check("GET /v1/models/other: 404", st == 404 and "error" in json.loads(data), (st, data))
    st, hd, data = request(port, "GET", "/metrics", key=None)
    check("GET /metrics: Prometheus text, without the API key",
          st == 200 and hd.get("content-type", "").startswith("text/plain") and b"gptc_model_loaded 1" in data,
          (st, data[:300]))
    st, hd, data = request(port, "GET", "/v1/completions")
    check("GET /v1/completions: 405 with Allow: POST", st == 405 and hd.get("allow") == "POST", (st, hd))
    st, _, data = request(port, "POST", "/v1/chat/completions", {"messages": []})
    check("an unknown route: 404 with an error object", st == 404 and "error" in json.loads(data), (st, data))


def test_curl(port):
    if not shutil.which("curl"):
        print("skip curl tests: curl is not installed")
        return
    ids = tokenize(P1)
    ref = reference(ids, 12)
    base = ["curl", "-sS", "--max-time", "300", "-H", "Authorization: Bearer " + KEY, "-H",
            "Content-Type: application/json", "http://127.0.0.1:%d/v1/completions" % port]
    r = subprocess.run(base + ["-d", json.dumps({"model": NAME, "prompt": P1, "max_tokens": 12,
                                                 "temperature": 0})], capture_output=True, timeout=300)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        out = {}
    ch = out.get("choices", [{}])[0]
    u = out.get("usage", {})
    check("curl: greedy completion equals `gptc generate --ids` decoded",
          ch.get("text") == ref.text and ch.get("finish_reason") == ref.finish and
          out.get("object") == "text_completion" and out.get("model") == NAME, (r.stdout[:500], ref.text))
    check("curl: usage counts are exact",
          u == {"prompt_tokens": len(ids), "completion_tokens": ref.tokens, "total_tokens": len(ids) + ref.tokens}, u)
    if u:
        LEDGER.add(u)
    r = subprocess.run(["curl", "-sSN"] + base[2:] + ["-d", json.dumps(
        {"prompt": P1, "max_tokens": 12, "temperature": 0, "stream": True,
         "stream_options": {"include_usage": True}})], capture_output=True, timeout=300)
    ev, done, ok = parse_sse(r.stdout)
    texts, finish, chunks = joined(ev)
    check("curl -N: one data: chunk per token, then data: [DONE]",
          ok and done and texts[0] == ref.text and finish[0] == ref.finish and 1 <= chunks[0] <= ref.tokens,
          (r.stdout[:800], ref.text))
    u = usage_of(ev)
    check("curl -N: the usage chunk (stream_options.include_usage)",
          u == {"prompt_tokens": len(ids), "completion_tokens": ref.tokens, "total_tokens": len(ids) + ref.tokens}, u)
    if u:
        LEDGER.add(u)


def test_openai(port):
    try:
        import openai
    except ImportError:
        print("skip the openai package tests: not installed (scripts/install-deps.sh --test installs it)")
        return
    client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key=KEY, max_retries=0, timeout=300)
    ids1, ids2 = tokenize(P1), tokenize(P2)
    ref = reference(ids1, 12)
    r = client.completions.create(model=NAME, prompt=P1, max_tokens=12, temperature=0)
    check("openai: completions.create, greedy, equals the CLI",
          r.choices[0].text == ref.text and r.choices[0].finish_reason == ref.finish and
          r.usage.completion_tokens == ref.tokens and r.usage.prompt_tokens == len(ids1), (r, ref.text))
    LEDGER.add(r.usage.model_dump())

    chunks = list(client.completions.create(model=NAME, prompt=P1, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    fin = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = chunks[-1].usage if chunks and chunks[-1].usage else None
    check("openai: completions.create(stream=True) equals the CLI",
          text == ref.text and fin == [ref.finish] and usage is not None and usage.completion_tokens == ref.tokens,
          (text, ref.text, fin))
    if usage:
        LEDGER.add(usage.model_dump())

    r = client.completions.create(model=NAME, prompt=ids1, max_tokens=12, temperature=0)
    check("openai: a prompt of token ids", r.choices[0].text == ref.text, (r.choices[0].text, ref.text))
    LEDGER.add(r.usage.model_dump())

    seeded = reference(ids1, 12, seed=7)
    r = client.completions.create(model=NAME, prompt=P1, max_tokens=12, seed=7)
    check("openai: seeded sampling (temperature 1 by default) equals the CLI's --seed",
          r.choices[0].text == seeded.text and r.usage.completion_tokens == seeded.tokens,
          (r.choices[0].text, seeded.text))
    LEDGER.add(r.usage.model_dump())

    r = client.completions.create(model=NAME, prompt=P1, max_tokens=10, seed=11, n=3)
    exp = [reference(ids1, 10, seed=11 + i) for i in range(3)]
    check("openai: n=3, choice i sampled with seed + i",
          [c.index for c in r.choices] == [0, 1, 2] and [c.text for c in r.choices] == [e.text for e in exp] and
          r.usage.completion_tokens == sum(e.tokens for e in exp) and r.usage.prompt_tokens == len(ids1),
          ([c.text for c in r.choices], [e.text for e in exp]))
    LEDGER.add(r.usage.model_dump(), n_choices=3)

    r = client.completions.create(model=NAME, prompt=[P1, P2], max_tokens=6, temperature=0, n=2)
    e1, e2 = reference(ids1, 6), reference(ids2, 6)
    check("openai: an array of prompts with n=2: prompt-major choices, usage counts each prompt once",
          [c.text for c in r.choices] == [e1.text, e1.text, e2.text, e2.text] and
          r.usage.prompt_tokens == len(ids1) + len(ids2) and r.usage.completion_tokens == 2 * (e1.tokens + e2.tokens),
          ([c.text for c in r.choices], r.usage))
    LEDGER.add(r.usage.model_dump(), prompt_tokens_per_choice=2 * (len(ids1) + len(ids2)))

    r = client.completions.create(model=NAME, prompt=[ids1, ids2], max_tokens=6, temperature=0)
    check("openai: an array of token-id arrays", [c.text for c in r.choices] == [e1.text, e2.text],
          [c.text for c in r.choices])
    LEDGER.add(r.usage.model_dump(), prompt_tokens_per_choice=len(ids1) + len(ids2))

    r = client.completions.create(model=NAME, prompt=P1, max_tokens=5, temperature=0, echo=True)
    check("openai: echo returns the prompt then the completion",
          r.choices[0].text == P1 + reference(ids1, 5).text, r.choices[0].text)
    LEDGER.add(r.usage.model_dump())
    r = client.completions.create(model=NAME, prompt=P1, max_tokens=0, echo=True)
    check("openai: echo with max_tokens 0 returns the prompt alone",
          r.choices[0].text == P1 and r.usage.completion_tokens == 0 and r.choices[0].finish_reason == "length",
          r)
    LEDGER.add(r.usage.model_dump())

    # stop: the text ends before the first stop sequence in the generated text
    long_ref = reference(ids1, 24, seed=3)
    m = re.search(r"[A-Za-z]{3}", long_ref.text[4:])
    stop = m.group(0) if m else None
    if not stop:
        check("a stop sequence found in the reference text", False, long_ref.text)
    else:
        want = long_ref.text[:long_ref.text.find(stop)]
        r = client.completions.create(model=NAME, prompt=P1, max_tokens=24, seed=3, stop=[stop, "never\x01"])
        check("openai: stop cuts the text before the stop sequence, finish_reason stop",
              r.choices[0].text == want and r.choices[0].finish_reason == "stop", (r.choices[0].text, want, stop))
        LEDGER.add(r.usage.model_dump())
        st, ev, done, ok, _ = stream(port, {"prompt": P1, "max_tokens": 24, "seed": 3, "stop": stop,
                                            "stream_options": {"include_usage": True}})
        texts, finish, _ = joined(ev)
        check("stream with stop: never sends a byte of the stop sequence",
              st == 200 and done and texts[0] == want and finish[0] == "stop", (texts, want))
        if usage_of(ev):
            LEDGER.add(usage_of(ev))

    # gptc's extensions, against the CLI's flags with the same meaning
    extra = ["--temperature", "0.7", "--top-k", "5", "--top-p", "0.9", "--repetition-penalty", "1.3",
             "--no-repeat-ngram-size", "2", "--min-new-tokens", "4", "--eos-token-id", "-1"]
    exp = reference(ids2, 16, seed=5, extra=extra)
    r = client.completions.create(model=NAME, prompt=P2, max_tokens=16, seed=5, temperature=0.7, top_p=0.9,
                                  extra_body={"top_k": 5, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                                              "min_tokens": 4, "ignore_eos": True})
    check("openai: top_k, repetition_penalty, no_repeat_ngram_size, min_tokens, ignore_eos as extra fields",
          r.choices[0].text == exp.text and r.usage.completion_tokens == exp.tokens, (r.choices[0].text, exp.text))
    LEDGER.add(r.usage.model_dump())

    r = client.completions.create(model=NAME, prompt=P1, max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    check("openai: logprobs=2 parse into the client's Logprobs (a token, its log-probability, 2 or 3 top ones)",
          lp is not None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) ==
          r.usage.completion_tokens and all(2 <= len(d) <= 3 for d in lp.top_logprobs) and
          all(v <= 0 for v in lp.token_logprobs), r)
    LEDGER.add(r.usage.model_dump())

    # the wrong key
    bad = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key="sk-wrong", max_retries=0)
    try:
        bad.completions.create(model=NAME, prompt=P1, max_tokens=2)
        check("openai: a wrong API key raises AuthenticationError", False, "no error")
    except openai.AuthenticationError as e:
        check("openai: a wrong API key raises AuthenticationError", e.status_code == 401, e)
    try:
        client.completions.create(model=NAME, prompt=P1, max_tokens=2, temperature=5)
        check("openai: an out-of-range value raises BadRequestError naming the field", False, "no error")
    except openai.BadRequestError as e:
        check("openai: an out-of-range value raises BadRequestError naming the field",
              e.status_code == 400 and "temperature" in str(e), e)


def test_penalties(port):
    """OpenAI's presence and frequency penalties: greedy decoding where each
    generated token t has lost count(t) * frequency + presence, computed here
    with numpy from `gptc logits`."""
    try:
        import numpy as np
    except ImportError:
        print("skip the penalty reference test: numpy is not installed")
        return
    ids = tokenize(P1)
    pres, freq, steps = 0.5, 0.75, 8
    gen = []
    for _ in range(steps):
        out = cli("logits", "-m", MODEL, "--prompt-ids", ",".join(map(str, ids + gen)), "--threads", "1")
        logits = np.array(out.split(), dtype=np.float32)
        counts = {}
        for t in gen:
            counts[t] = counts.get(t, 0) + 1
        for t, c in counts.items():
            logits[t] -= np.float32(c) * np.float32(freq) + np.float32(pres)
        nxt = int(np.argmax(logits))
        gen.append(nxt)
        if nxt == EOS:
            break
    exp = Ref(gen, steps)
    st, r = complete(port, {"prompt": P1, "max_tokens": steps, "temperature": 0, "presence_penalty": pres,
                            "frequency_penalty": freq})
    text = r["choices"][0]["text"] if st == 200 else None
    check("presence_penalty and frequency_penalty: OpenAI's formula (numpy over gptc logits)",
          text == exp.text and r["usage"]["completion_tokens"] == exp.tokens, (st, r, exp.text))
    plain = reference(ids, steps)
    check("... and they change the greedy output of this model", exp.text != plain.text, plain.text)
    if st == 200:
        LEDGER.add(r["usage"])


def token_name(t):
    """OpenAI's name of a token in logprobs: its text, or bytes:\\xNN... when
    its bytes are not whole UTF-8 characters."""
    b = TOKEN_BYTES[t]
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join("\\x%02x" % c for c in b)


def text_chars_before(gen, k):
    """Characters of the text the first k generated tokens make (a token that
    ends inside a character adds nothing until the character is whole)."""
    b = b"".join(TOKEN_BYTES[t] for t in gen[:k])
    for cut in range(4):
        try:
            return len(b[:len(b) - cut].decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return None


def merged_logprobs(events):
    """A stream's chunks' logprobs, concatenated (one choice)."""
    merged = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in events:
        for c in e.get("choices", []):
            for key in merged:
                merged[key] += (c.get("logprobs") or {}).get(key, [])
    return merged


def test_logprobs(port):
    """logprobs: the log-softmax of the model's raw logits (numpy over `gptc
    logits`, float64) for the chosen token and the top ones, OpenAI's shape
    (tokens, token_logprobs, top_logprobs with the chosen token added,
    text_offset in characters), streamed and not, greedy and sampled."""
    try:
        import numpy as np
    except ImportError:
        print("skip the logprobs reference test: numpy is not installed")
        return
    ids = tokenize(P1)
    steps, k = 6, 3
    # On the CPU (fp32) the server's decode steps and the reference's prefill
    # of the prefix agree to 1e-6; on CUDA (GPTC_DEVICES_BACKEND=cuda: the GPU
    # machine's run, fp16) they are different kernels rounding activations to
    # fp16, and a logit moves by up to ~1e-3 between them.
    tol = 1e-4 if os.environ.get("GPTC_DEVICES_BACKEND", "cpu") == "cpu" else 5e-3

    def want_for(gen, prefix=None):
        prefix = ids if prefix is None else prefix
        out = []
        for i, t in enumerate(gen):
            z = np.array(cli("logits", "-m", MODEL, "--prompt-ids", ",".join(map(str, prefix + gen[:i])),
                             "--threads", "1").split(), dtype=np.float64)
            lsm = z - (z.max() + np.log(np.exp(z - z.max()).sum()))
            top = sorted(range(len(z)), key=lambda j: (-z[j], j))[:k]
            out.append((lsm[t], {token_name(j): lsm[j] for j in top + ([t] if t not in top else [])}))
        return out

    def close_to(lp, gen, want, offsets=True):
        if not lp or lp.get("tokens") != [token_name(t) for t in gen] or len(lp.get("token_logprobs", [])) != len(gen):
            return False
        for i, (w_lp, w_top) in enumerate(want):
            got_top = lp["top_logprobs"][i]
            if abs(lp["token_logprobs"][i] - w_lp) > tol or set(got_top) != set(w_top):
                return False
            if any(abs(got_top[n] - w_top[n]) > tol for n in w_top):
                return False
            if list(got_top.values())[:k] != sorted(list(got_top.values())[:k], reverse=True):
                return False
        offs = [text_chars_before(gen, i) for i in range(len(gen))]
        return not offsets or None in offs or lp["text_offset"] == offs

    greedy = reference(ids, steps)
    want = want_for(greedy.ids)
    st, r = complete(port, {"prompt": P1, "max_tokens": steps, "temperature": 0, "logprobs": k})
    lp = r["choices"][0].get("logprobs") if st == 200 else None
    check("logprobs (greedy): tokens, log-softmax of the raw logits, top %d, text_offset" % k,
          st == 200 and r["choices"][0]["text"] == greedy.text and close_to(lp, greedy.ids, want), (st, r, want))
    if st == 200:
        LEDGER.add(r["usage"])
    st, ev, done, ok, _ = stream(port, {"prompt": P1, "max_tokens": steps, "temperature": 0, "logprobs": k})
    merged = merged_logprobs(ev)
    check("logprobs streamed: the chunks' logprobs together are the whole list",
          st == 200 and done and merged == lp, (merged, lp))
    if st == 200:
        LEDGER.add({"prompt_tokens": len(ids), "completion_tokens": greedy.tokens})

    # Sampled: the same tokens as without logprobs; the log-probabilities are
    # the model's, not those after temperature or top-k.
    extra = ["--temperature", "0.7", "--top-k", "5"]
    sampled = reference(ids, steps, seed=9, extra=extra)
    st, r = complete(port, {"prompt": P1, "max_tokens": steps, "seed": 9, "temperature": 0.7, "top_k": 5,
                            "logprobs": k})
    check("logprobs (sampled, temperature 0.7, top_k 5): the same tokens, the model's log-probabilities",
          st == 200 and r["choices"][0]["text"] == sampled.text and
          close_to(r["choices"][0].get("logprobs"), sampled.ids, want_for(sampled.ids)), (st, r))
    if st == 200:
        LEDGER.add(r["usage"])
    # echo with logprobs (how lm-evaluation-harness scores a text): the
    # prompt's tokens first, each under the logits of those before it (the
    # first has none: null), then the generated ones.
    pwant = want_for(ids[1:], prefix=ids[:1])
    for max_tokens in (0, 3):
        gen = reference(ids, max_tokens).ids if max_tokens else []
        st, r = complete(port, {"prompt": P1, "max_tokens": max_tokens, "temperature": 0, "echo": True,
                                "logprobs": k})
        lp = r["choices"][0].get("logprobs") if st == 200 else None
        ok = st == 200 and lp is not None and lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        if ok:
            rest = {key: v[1:] for key, v in lp.items()}
            rest["text_offset"] = [x - len(P1) for x in rest["text_offset"]]
            ok = close_to({key: v[:len(ids) - 1] for key, v in rest.items()}, ids[1:], pwant, offsets=False)
            ok = ok and lp["tokens"][:len(ids)] == [token_name(t) for t in ids] and \
                lp["text_offset"][:len(ids)] == [len(decode(ids[:i])) for i in range(len(ids))]
            if gen:
                tail = {key: v[len(ids):] for key, v in lp.items()}
                tail["text_offset"] = [x - len(P1) for x in tail["text_offset"]]
                ok = ok and close_to(tail, gen, want_for(gen))
            ok = ok and r["choices"][0]["text"] == P1 + (reference(ids, max_tokens).text if gen else "")
        check("echo with logprobs, max_tokens %d: the prompt's tokens (the first null), then the generated" %
              max_tokens, ok, (st, r))
        if st == 200:
            LEDGER.add(r["usage"])
        if gen:
            st, ev, done, _, _ = stream(port, {"prompt": P1, "max_tokens": max_tokens, "temperature": 0,
                                               "echo": True, "logprobs": k})
            merged = merged_logprobs(ev)
            check("echo with logprobs, streamed: the chunks' logprobs together are the whole list",
                  st == 200 and done and merged == lp, (merged, lp))
            if st == 200:
                LEDGER.add({"prompt_tokens": len(ids), "completion_tokens": len(gen)})
    st, r = complete(port, {"prompt": P1, "max_tokens": 3, "temperature": 0})
    check("no logprobs asked: logprobs is null", st == 200 and r["choices"][0]["logprobs"] is None, r)
    if st == 200:
        LEDGER.add(r["usage"])
    st, r = complete(port, {"prompt": P1, "max_tokens": 3, "temperature": 0, "logprobs": 0})
    lp0 = r["choices"][0].get("logprobs") if st == 200 else None
    check("logprobs 0: the chosen token alone in top_logprobs",
          lp0 is not None and all(len(t) == 1 for t in lp0["top_logprobs"]) and len(lp0["tokens"]) == 3, r)
    if st == 200:
        LEDGER.add(r["usage"])


def test_nul(port):
    """A NUL character (\u0000) in a prompt is part of it, not where it ends
    (cJSON's strings would cut it there)."""
    ids = [int(x) for x in cli("tokenize", "-m", MODEL, stdin=b"a\x00b c").split()]
    st, r = complete(port, {"prompt": "a\u0000b c", "max_tokens": 4, "temperature": 0, "echo": True})
    ref = reference(ids, 4)
    check("a prompt with \\u0000: tokenized whole (as the CLI does), echoed whole, continued as its ids",
          st == 200 and r["usage"]["prompt_tokens"] == len(ids) and len(ids) >= 3 and
          r["choices"][0]["text"] == "a\x00b c" + ref.text, (st, r, ids, ref.text))
    if st == 200:
        LEDGER.add(r["usage"])
    st, r = complete(port, {"prompt": ["\\u0000", "x\u0000"], "max_tokens": 0, "echo": True})
    check("an escaped backslash before u0000 is text; several prompts with NUL",
          st == 200 and [c["text"] for c in r["choices"]] == ["\\u0000", "x\x00"], (st, r))
    if st == 200:
        LEDGER.add(r["usage"])
    st, r = complete(port, {"prompt": "a", "stop": ["x\u0000"]})
    check("\\u0000 in a stop sequence: 400 naming stop",
          st == 400 and r.get("error", {}).get("param") == "stop", (st, r))
    st, hd, data = request(port, "POST", "/v1/completions", b'{"prompt": "a\\u0000 \\ufdd0"}')
    check("\\u0000 and U+FDD0 in one body: 400, one line", st == 400 and b"FDD0" in data and b"\n" not in data.strip(),
          (st, data))


def test_beams(port):
    """num_beams > 1: beam search, as `gptc generate --num-beams` (which the
    fixtures tie to transformers), the n best beams as the n choices, best
    first; streamed too."""
    ids = tokenize(P2)
    out = cli("generate", "-m", MODEL, "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", "10", "--ids",
              "--threads", "1", "--num-beams", "4", "--num-return-sequences", "2", "--length-penalty", "0.5",
              "--early-stopping", "true")
    refs = [Ref([int(x) for x in line.split()], 10) for line in out.strip().split("\n")]
    req = {"prompt": P2, "max_tokens": 10, "temperature": 0, "num_beams": 4, "n": 2, "length_penalty": 0.5,
           "early_stopping": True}
    st, r = complete(port, req)
    check("num_beams 4, n 2: the CLI's two best beams, best first, usage exact",
          st == 200 and len(refs) == 2 and [c["text"] for c in r["choices"]] == [x.text for x in refs] and
          [c["finish_reason"] for c in r["choices"]] == [x.finish for x in refs] and
          r["usage"]["completion_tokens"] == sum(x.tokens for x in refs), (st, r, [x.text for x in refs]))
    if st == 200:
        LEDGER.add(r["usage"], n_choices=2)
    st, ev, done, ok, _ = stream(port, req)
    texts, finish, _ = joined(ev, 2)
    check("num_beams streamed: the same two texts, then [DONE]",
          st == 200 and done and ok and texts == [x.text for x in refs], (st, texts))
    if st == 200:
        LEDGER.add({"prompt_tokens": len(ids), "completion_tokens": sum(x.tokens for x in refs)}, n_choices=2)
    # A search runs beside the batch, on the same model: both at once.
    plain = reference(tokenize(P1), 40)
    results = [None, None]
    ts = [threading.Thread(target=lambda i=i, q=q: results.__setitem__(i, complete(port, q)))
          for i, q in enumerate([req, {"prompt": P1, "max_tokens": 40, "temperature": 0}])]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    (sb, rb), (sp, rp) = results
    check("a beam search and a batched request at the same time: each its own result",
          sb == 200 and sp == 200 and [c["text"] for c in rb["choices"]] == [x.text for x in refs] and
          rp["choices"][0]["text"] == plain.text, results)
    if sb == 200 and sp == 200:
        LEDGER.add(rb["usage"], n_choices=2)
        LEDGER.add(rp["usage"])


def test_metrics_exact(port):
    m = metrics(port)
    ok_reqs = m.get('gptc_requests_total{endpoint="/v1/completions",status="200"}', 0)
    check("/metrics: completions answered 200, counted exactly", ok_reqs == LEDGER.ok, (ok_reqs, LEDGER.ok))
    check("/metrics: generated tokens, counted exactly", m.get("gptc_generation_tokens_total") == LEDGER.generated,
          (m.get("gptc_generation_tokens_total"), LEDGER.generated))
    check("/metrics: prompt tokens, counted exactly", m.get("gptc_prompt_tokens_total") == LEDGER.prompt,
          (m.get("gptc_prompt_tokens_total"), LEDGER.prompt))
    ttft = m.get("gptc_time_to_first_token_seconds_count", 0)
    itl = m.get("gptc_inter_token_latency_seconds_count", 0)
    inf = m.get('gptc_time_to_first_token_seconds_bucket{le="+Inf"}', -1)
    check("/metrics: latency histograms (time to first token, inter-token)",
          0 < ttft <= LEDGER.ok and inf == ttft and 0 < itl < LEDGER.generated and
          m.get("gptc_inter_token_latency_seconds_sum", -1) >= 0, (ttft, itl, LEDGER.ok))
    for g in ("gptc_queue_length", "gptc_running_batch_size", "gptc_kv_cache_positions_used",
              "gptc_kv_cache_positions_total", "gptc_kv_cache_usage_ratio"):
        check("/metrics: gauge " + g, g in m, sorted(m)[:40])
    check("/metrics: an idle server holds no K/V cache",
          m.get("gptc_kv_cache_positions_used") == 0 and m.get("gptc_running_batch_size") == 0 and
          m.get("gptc_kv_cache_positions_total") == 64 * N_CTX, m)
    st, _, _ = request(port, "POST", "/v1/completions", {"prompt": P1, "temperature": 9})
    m2 = metrics(port)
    check("/metrics: a 400 is counted by its status",
          m2.get('gptc_requests_total{endpoint="/v1/completions",status="400"}', 0) ==
          m.get('gptc_requests_total{endpoint="/v1/completions",status="400"}', 0) + 1, st)


class StreamReader(threading.Thread):
    """Reads one streamed completion as it comes, with arrival times."""

    def __init__(self, port, req, start=None):
        super().__init__(daemon=True)
        self.port, self.req, self.start_evt = port, req, start
        self.events, self.times, self.done, self.status, self.error = [], [], False, None, None
        self.first = threading.Event()
        self.headers = threading.Event()  # the server accepted the request
        self.conn = None

    def run(self):
        try:
            if self.start_evt:
                self.start_evt.wait()
            self.conn = c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            c.request("POST", "/v1/completions", json.dumps(dict(self.req, stream=True)),
                      {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
            r = c.getresponse()
            self.status = r.status
            self.headers.set()
            if r.status != 200:
                self.events.append(json.loads(r.read()))
                self.first.set()
                return
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if not line.startswith("data: "):
                    continue
                self.times.append(time.monotonic())
                if line == "data: [DONE]":
                    self.done = True
                    break
                self.events.append(json.loads(line[6:]))
                self.first.set()
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the check that reads it
            self.error = e
        finally:
            self.headers.set()
            self.first.set()


def test_continuous_batching(port):
    """On the demo server: a short request joins a long one and ends first."""
    a = StreamReader(port, {"prompt": "ROMEO:", "max_tokens": 400, "temperature": 0, "ignore_eos": True})
    a.start()
    a.first.wait(300)
    t0 = time.monotonic()
    st, r = complete(port, {"prompt": "JULIET:", "max_tokens": 2, "temperature": 0})
    t1 = time.monotonic()
    still = a.is_alive() and not a.done
    check("continuous batching: a short request joins a running one and ends first",
          st == 200 and r["usage"]["completion_tokens"] == 2 and still, (st, r, a.done, a.error))
    print("     (short request: %.3f s while the long one streamed %d chunks)" % (t1 - t0, len(a.events)))
    a.conn.sock.shutdown(socket.SHUT_RDWR)
    a.conn.close()
    a.join(60)
    wait_idle(port, 60)


def test_concurrent(port):
    """64 streams at once, each equal to the same request made alone."""
    texts = [P1, P2, "Once upon a time", "import numpy as np\n", "Ünïcödé 🙂 日本語", "1, 2, 3, 4,",
             "<|endoftext|>", "  spaces   and\ttabs"]
    specs = []
    for i in range(16):
        req = {"prompt": texts[i % len(texts)], "max_tokens": 4 + (i * 5) % 13}
        if i % 2:
            req["seed"] = 100 + i
        else:
            req["temperature"] = 0
        if i % 5 == 4:
            req["n"] = 2
        if i % 7 == 3:
            req["prompt"] = tokenize(texts[i % len(texts)])
        specs.append(dict(req, stream_options={"include_usage": True}))
    alone = []
    for s in specs:
        st, ev, done, ok, ctype = stream(port, s)
        alone.append((st, joined(ev, s.get("n", 1))[:2], usage_of(ev), done and ok))
    check("16 different streams, one at a time", all(a[0] == 200 and a[3] for a in alone), alone)
    # greedy ones also equal the CLI
    cli_ok = True
    for s, a in zip(specs, alone):
        if s.get("temperature") == 0 and s.get("n", 1) == 1:
            ids = s["prompt"] if isinstance(s["prompt"], list) else tokenize(s["prompt"])
            ref = reference(ids, s["max_tokens"])
            cli_ok &= a[1] == ([ref.text], [ref.finish])
    check("... the greedy ones equal `gptc generate --ids`", cli_ok)
    go = threading.Event()
    readers = [StreamReader(port, specs[i % 16], start=go) for i in range(64)]
    for r in readers:
        r.start()
    t0 = time.monotonic()
    go.set()
    for r in readers:
        r.join(600)
    dt = time.monotonic() - t0
    bad = []
    for i, r in enumerate(readers):
        s, a = specs[i % 16], alone[i % 16]
        got = (r.status, joined(r.events, s.get("n", 1))[:2], usage_of(r.events), r.done)
        if got != (a[0], a[1], a[2], True):
            bad.append((i, got, a, r.error))
    check("64 concurrent streams all complete, each equal to the same request alone", not bad, bad[:3])
    n_tokens = sum(a[2]["completion_tokens"] for a in alone) * 4 if all(a[2] for a in alone) else 0
    print("     (64 streams: %.2f s, %d tokens, %.0f tokens/s)" % (dt, n_tokens, n_tokens / dt))
    for i in range(64):
        u = readers[i].events and usage_of(readers[i].events)
        if u:
            LEDGER.add(u, n_choices=specs[i % 16].get("n", 1))
    for a, s in zip(alone, specs):
        if a[2]:
            LEDGER.add(a[2], n_choices=s.get("n", 1))


def wait_idle(port, limit):
    """Seconds until the running batch is empty and holds no cache, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        m = metrics(port)
        if m.get("gptc_running_batch_size") == 0 and m.get("gptc_kv_cache_positions_used") == 0 and \
                m.get("gptc_queue_length") == 0:
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


def test_disconnect(port):
    """On the demo server: 400 tokens would take seconds; a client that leaves
    has its sequences cancelled and its cache freed within a step or two."""
    ids = tokenize("ROMEO:")
    max_tokens = 400
    for n in (1, 3):
        before = metrics(port).get("gptc_generation_tokens_total", 0)
        r = StreamReader(port, {"prompt": ids, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                                "n": n})
        r.start()
        r.first.wait(300)
        while len(r.times) < 3 * n and r.is_alive():
            time.sleep(0.001)
        r.conn.sock.shutdown(socket.SHUT_RDWR)
        r.conn.close()
        t_idle = wait_idle(port, 60)
        generated = metrics(port).get("gptc_generation_tokens_total", 0) - before
        check("a client that disconnects mid-stream (n=%d) is cancelled at once, its cache freed" % n,
              t_idle is not None and t_idle < 1.0 and generated < n * max_tokens / 4,
              "idle after %s s, %d of %d tokens generated" % (t_idle, generated, n * max_tokens))
    # a non-streamed request whose client goes away
    before = metrics(port).get("gptc_generation_tokens_total", 0)
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"prompt": ids, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
              b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    t0 = time.monotonic()
    while metrics(port).get("gptc_generation_tokens_total", 0) == before and time.monotonic() - t0 < 60:
        time.sleep(0.002)
    s.close()
    t_idle = wait_idle(port, 60)
    generated = metrics(port).get("gptc_generation_tokens_total", 0) - before
    check("a client that disconnects while waiting for a whole completion is cancelled",
          t_idle is not None and t_idle < 1.0 and generated < max_tokens / 4, (t_idle, generated))


def raw_exchange(port, data, read=True, timeout=30):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        # The server may answer and close before it has read everything (a
        # header too big): a refused send is its answer, not a failure.
        try:
            s.sendall(data)
            if not read:
                return b""
            s.shutdown(socket.SHUT_WR)
        except OSError:
            if not read:
                return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (OSError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def good_request_works(port):
    st, r = complete(port, {"prompt": P1, "max_tokens": 2, "temperature": 0})
    if st == 200:
        LEDGER.add(r["usage"])
    return st == 200 and r["choices"][0]["text"] == reference(tokenize(P1), 2).text


def test_bad_requests(port):
    hdr = {"Content-Type": "application/json"}
    cases = [
        ("truncated JSON", b'{"prompt": "abc", "max_tok', 400, None, "JSON"),
        ("not JSON", b"prompt=abc", 400, None, "JSON"),
        ("trailing garbage", b'{"prompt": "abc"} x', 400, None, "JSON"),
        ("an empty body", b"", 400, None, "JSON"),
        ("a JSON array", b"[1, 2]", 400, None, "object"),
        ("invalid UTF-8", b'{"prompt": "ab\xff\xfe"}', 400, None, "UTF-8"),
        ("an overlong UTF-8 encoding", b'{"prompt": "\xc0\xaf"}', 400, None, "UTF-8"),
        ("a lone surrogate escape", b'{"prompt": "\\ud800x"}', 400, None, "JSON"),
        ("deep nesting", b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None, ""),
        ("huge max_tokens", b'{"prompt": "a", "max_tokens": 1e308}', 400, "max_tokens", "max_tokens"),
        ("max_tokens beyond double", b'{"prompt": "a", "max_tokens": 1e999}', 400, "max_tokens", "max_tokens"),
        ("max_tokens 2^64", b'{"prompt": "a", "max_tokens": 18446744073709551616}', 400, "max_tokens", ""),
        ("negative max_tokens", {"prompt": "a", "max_tokens": -1}, 400, "max_tokens", ""),
        ("fractional n", {"prompt": "a", "n": 1.5}, 400, "n", "integer"),
        ("n = 0", {"prompt": "a", "n": 0}, 400, "n", ""),
        ("huge seed", b'{"prompt": "a", "seed": 1e30}', 400, "seed", "seed"),
        ("huge token id", b'{"prompt": [1e20]}', 400, "prompt", "token id"),
        ("token id out of the vocabulary", {"prompt": [50257]}, 400, "prompt", "token id"),
        ("negative token id", {"prompt": [5, -1]}, 400, "prompt", "prompt[1]"),
        ("temperature 3", {"prompt": "a", "temperature": 3}, 400, "temperature", ""),
        ("top_p 0", {"prompt": "a", "top_p": 0}, 400, "top_p", ""),
        ("presence_penalty 2.5", {"prompt": "a", "presence_penalty": 2.5}, 400, "presence_penalty", ""),
        ("min_tokens above max_tokens", {"prompt": "a", "max_tokens": 3, "min_tokens": 5}, 400, "min_tokens", ""),
        ("prompt an object", {"prompt": {"a": 1}}, 400, "prompt", "prompt"),
        ("prompt mixing types", {"prompt": ["a", 5]}, 400, "prompt", "prompt[1]"),
        ("an empty prompt array", {"prompt": []}, 400, "prompt", ""),
        ("max_tokens a string", {"prompt": "a", "max_tokens": "5"}, 400, "max_tokens", "integer"),
        ("stream a string", {"prompt": "a", "stream": "yes"}, 400, "stream", "boolean"),
        ("stop a number", {"prompt": "a", "stop": 5}, 400, "stop", ""),
        ("an empty stop sequence", {"prompt": "a", "stop": [""]}, 400, "stop", ""),
        ("17 stop sequences", {"prompt": "a", "stop": ["x%d" % i for i in range(17)]}, 400, "stop", ""),
        ("model a number", {"prompt": "a", "model": 3}, 400, "model", ""),
        ("an unknown model", {"prompt": "a", "model": "gpt-4"}, 400, "model", "gpt-4"),
        ("an unknown field", {"prompt": "a", "temprature": 0}, 400, "temprature", "unrecognized"),
        ("logprobs 21", {"prompt": "a", "logprobs": 21}, 400, "logprobs", "logprobs"),
        ("logprobs a string", {"prompt": "a", "logprobs": "2"}, 400, "logprobs", "integer"),
        ("suffix (not supported)", {"prompt": "a", "suffix": "b"}, 400, "suffix", ""),
        ("best_of above n", {"prompt": "a", "best_of": 3}, 400, "best_of", ""),
        ("num_beams 4 with the default temperature 1", {"prompt": "a", "num_beams": 4}, 400, "temperature",
         "temperature 0"),
        ("num_beams 65", {"prompt": "a", "num_beams": 65, "temperature": 0}, 400, "num_beams", ""),
        ("n above num_beams", {"prompt": "a", "num_beams": 2, "n": 3, "temperature": 0}, 400, "n", "num_beams"),
        ("early_stopping 'sometimes'", {"prompt": "a", "num_beams": 2, "temperature": 0,
                                        "early_stopping": "sometimes"}, 400, "early_stopping", ""),
        ("logprobs with num_beams", {"prompt": "a", "num_beams": 2, "temperature": 0, "logprobs": 1}, 400,
         "logprobs", "beam"),
        ("stream_options without stream", {"prompt": "a", "stream_options": {"include_usage": True}}, 400,
         "stream_options", ""),
        ("a prompt too long for the context", {"prompt": list(range(120)), "max_tokens": 16}, 400, "prompt",
         "maximum context length is 128"),
        ("n x prompts beyond what the server takes", {"prompt": ["a"] * 400}, 400, "prompt", ""),
    ]
    all_ok = True
    for name, body, want, param, word in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        st, hd, data = request(port, "POST", "/v1/completions", raw, headers=hdr)
        try:
            err = json.loads(data)["error"]
            shape = isinstance(err["message"], str) and "type" in err and "param" in err and "code" in err
        except (ValueError, KeyError, TypeError):
            err, shape = {}, False
        ok = st == want and shape and (param is None or err.get("param") == param) and \
            word in err.get("message", "") and "\n" not in err.get("message", "\n")
        ok = check("bad request, %s: %d naming the field, one line" % (name, want), ok, (st, data[:300])) and ok
        ok = check("... then the next good request is answered", good_request_works(port)) and ok
        all_ok &= ok

    # 10 MB: refused from its Content-Length (read and dropped, so that the
    # client sees the 413), before the body with Expect: 100-continue, and
    # when sent chunked
    big = b'{"prompt": "' + b"a" * (10 << 20) + b'"}'
    st, _, data = request(port, "POST", "/v1/completions", big, headers=hdr)
    check("a 10 MB body: 413", st == 413 and b"max-body" in data, (st, data[:200]))
    check("... then the next good request is answered", good_request_works(port))
    out = raw_exchange(port, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                       b"\r\nExpect: 100-continue\r\nContent-Length: " + str(len(big)).encode() + b"\r\n\r\n")
    check("a 10 MB body announced with Expect: 100-continue: 413 before it is sent",
          out.startswith(b"HTTP/1.1 413"), out[:200])
    if shutil.which("curl"):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "gptc_serve_big_%d.json" % os.getpid())
        with open(path, "wb") as f:
            f.write(big)
        try:
            r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                "Authorization: Bearer " + KEY, "--data-binary", "@" + path,
                                "http://127.0.0.1:%d/v1/completions" % port], capture_output=True, timeout=120)
        finally:
            os.remove(path)
        check("curl --data-binary @10MB: 413", r.stdout == b"413", (r.stdout, r.stderr))

    def chunks():
        for _ in range(160):
            yield b"a" * 65536

    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("POST", "/v1/completions", body=chunks(), encode_chunked=True,
                  headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        st = c.getresponse().status
        c.close()
    except (ConnectionResetError, BrokenPipeError) as e:
        st = str(e)
    check("a 10 MB chunked body (no Content-Length): 413", st == 413, st)
    check("... then the next good request is answered", good_request_works(port))

    # malformed HTTP
    out = raw_exchange(port, b"\x00\x01\x02 garbage \xff\r\n\r\n")
    check("garbage instead of HTTP: an error or a closed connection", not out or out.startswith(b"HTTP/1.1 4"),
          out[:100])
    out = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
    check("a 200 KB header: refused", not out or out.startswith(b"HTTP/1.1 4"), out[:100])
    check("... then the next good request is answered", good_request_works(port))

    # slow clients: headers sent byte by byte while others are served
    body = json.dumps({"prompt": P1, "max_tokens": 2, "temperature": 0}).encode()
    msg = (b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + KEY.encode() +
           b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    slow_result = {}

    def slowloris(k):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        try:
            for i in range(len(msg)):
                s.sendall(msg[i:i + 1])
                time.sleep(0.004)
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            slow_result[k] = data
        except OSError as e:
            slow_result[k] = str(e).encode()
        finally:
            s.close()

    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    slow = [threading.Thread(target=slowloris, args=(k,)) for k in range(4)]
    for t in slow:
        t.start()
    t0 = time.monotonic()
    good = [good_request_works(port) for _ in range(3)]
    dt = time.monotonic() - t0
    alive = sum(t.is_alive() for t in slow)
    for t in slow:
        t.join(120)
    for s in idle:
        s.close()
    check("slow clients (headers byte by byte) and 50 idle connections do not hold up others",
          all(good) and alive > 0, (good, dt, alive))
    check("... and the slow clients are answered too",
          all(slow_result.get(k, b"").startswith(b"HTTP/1.1 200") for k in range(4)),
          [slow_result.get(k, b"")[:60] for k in range(4)])
    if all(slow_result.get(k, b"").startswith(b"HTTP/1.1 200") for k in range(4)):
        for k in range(4):
            LEDGER.add({"completion_tokens": 2, "prompt_tokens": len(tokenize(P1))})
    return all_ok


def test_auth(port):
    for name, headers in (("no Authorization header", {}), ("a wrong key", {"Authorization": "Bearer sk-wrong"}),
                          ("a key one byte short", {"Authorization": "Bearer " + KEY[:-1]}),
                          ("a longer key", {"Authorization": "Bearer " + KEY + "x"}),
                          ("Basic instead of Bearer", {"Authorization": "Basic " + KEY})):
        st, _, data = request(port, "POST", "/v1/completions", {"prompt": "a"}, headers=headers, key=None)
        try:
            code = json.loads(data)["error"]["code"]
        except (ValueError, KeyError):
            code = None
        check("--api-key: %s is 401" % name, st == 401 and code == "invalid_api_key", (st, data))
    st, _, _ = request(port, "GET", "/v1/models", key=None)
    check("--api-key guards /v1/models too", st == 401, st)
    st, _, _ = request(port, "GET", "/v1/models", headers={"Authorization": "bearer " + KEY}, key=None)
    check("--api-key: the scheme is case-insensitive", st == 200, st)


def stop_server(srv, name):
    rc = srv.stop()
    err = srv.stderr()
    check("%s: SIGTERM exits 0 with no sanitizer report" % name, rc == 0 and not sanitizer_hit(err),
          (rc, err[-3000:]))


def test_limits():
    """A small demo server: 429 when full, the K/V cache limit, SIGTERM draining."""
    # 1 MiB of K/V cache: 160 positions of the demo model (fp32, 6 layers x 128 x K and V)
    srv = Server("--max-batch", "2", "--max-queue", "1", "--kv-memory", "1MiB", "--api-key", KEY, *CPU, model=DEMO)
    port = srv.port
    try:
        long_req = {"prompt": "ROMEO:", "max_tokens": 150, "temperature": 0, "ignore_eos": True}
        st, r = complete(port, dict(long_req, max_tokens=300))
        check("a request larger than --kv-memory: 400 naming max_tokens",
              st == 400 and r["error"]["param"] == "max_tokens" and "kv_memory" in r["error"]["message"], r)
        st, r = complete(port, dict(long_req, n=4))
        check("more sequences than --max-batch + --max-queue in one request: 400", st == 400, r)
        # three long streams fill it (each reserves the whole cache: one runs, two wait)
        readers = [StreamReader(port, long_req) for _ in range(3)]
        for rd in readers:
            rd.start()
        for rd in readers:
            rd.headers.wait(300)
        st, hd, data = request(port, "POST", "/v1/completions", dict(long_req, max_tokens=2))
        t0 = time.monotonic()  # the gauges are the engine's after its last step
        while time.monotonic() - t0 < 30:
            m = metrics(port)
            if m.get("gptc_running_batch_size") == 1:
                break
            time.sleep(0.01)
        check("queue full: 429 with Retry-After and an error object",
              st == 429 and hd.get("retry-after") and json.loads(data)["error"]["code"] == "queue_full",
              (st, hd, data[:300]))
        check("/metrics while full: queue length 2, running batch 1, K/V cache reserved",
              m.get("gptc_queue_length") == 2 and m.get("gptc_running_batch_size") == 1 and
              m.get("gptc_kv_cache_positions_reserved") == 160 and
              m.get('gptc_requests_total{endpoint="/v1/completions",status="429"}') == 1, m)
        for rd in readers:  # cut short: their cache goes back
            rd.first.wait(300) if rd is readers[0] else None
            if rd.conn and rd.conn.sock:
                rd.conn.sock.shutdown(socket.SHUT_RDWR)
            rd.join(60)
        check("... and once they leave, the server is idle", wait_idle(port, 60) is not None)

        # SIGTERM while a stream runs: it finishes, new connections are refused
        rd = StreamReader(port, dict(long_req, max_tokens=40, stream_options={"include_usage": True}))
        rd.start()
        rd.first.wait(300)
        srv.p.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        refused = False
        try:
            st, _, _ = request(port, "GET", "/health", key=None, timeout=10)
            refused = st == 503
        except OSError:
            refused = True
        rd.join(600)
        texts, finish, _ = joined(rd.events)
        check("SIGTERM: no new connections, the stream in progress finishes whole",
              refused and rd.done and finish == ["length"] and texts[0] and
              (usage_of(rd.events) or {}).get("completion_tokens") == 40, (refused, rd.done, finish, rd.error))
    finally:
        stop_server(srv, "the small server")


def test_timeout():
    srv = Server("--request-timeout", "0.5", *CPU, model=DEMO)
    port = srv.port
    try:
        # 400 tokens of the demo model: several seconds
        req = {"prompt": "ROMEO:", "max_tokens": 400, "temperature": 0, "ignore_eos": True}
        st, r = complete(port, req, key=None)
        check("--request-timeout: a completion still running gets 504",
              st == 504 and "timed out" in r["error"]["message"], (st, r))
        st, ev, done, ok, _ = stream(port, req, key=None)
        check("--request-timeout: a stream still running ends with an error event, then [DONE]",
              st == 200 and done and ok and ev and "error" in ev[-1] and "timed out" in ev[-1]["error"]["message"],
              ev[-1:] if ev else ev)
        t_idle = wait_idle(port, 30)
        check("... and its sequence is cancelled", t_idle is not None, t_idle)
    finally:
        stop_server(srv, "the timeout server")


def test_startup_errors():
    r = subprocess.run([BIN, "serve", "--port", "99999"], capture_output=True, timeout=60)
    err = r.stderr.decode()
    check("serve --port 99999: exit 2, one line naming the flag",
          r.returncode == 2 and "--port" in err and len(err.strip().splitlines()) == 1, (r.returncode, err))
    r = subprocess.run([BIN, "serve", "--bogus", "1"], capture_output=True, timeout=60)
    check("serve --bogus: exit 2", r.returncode == 2 and "--bogus" in r.stderr.decode(), r.stderr)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    r = subprocess.run([BIN, "serve", "-m", MODEL, "--port", str(busy.getsockname()[1])], capture_output=True,
                       timeout=60)
    busy.close()
    check("serve on a port in use: exit 1 saying so", r.returncode == 1 and "cannot listen" in r.stderr.decode(),
          (r.returncode, r.stderr))
    srv = Server(model=os.path.join(ROOT, "tests", "no-such-model"), wait=False)
    rc = srv.p.wait(120)
    srv.reader.join(10)
    check("serve -m a missing folder: exits non-zero with the loader's one-line error",
          rc not in (0, None) and "no-such-model" in srv.stderr() and not sanitizer_hit(srv.stderr()),
          (rc, srv.stderr()))


def test_devices():
    """--devices 0,0 on the CPU: two engines (each with --max-batch 1) in one
    server, as --devices 0,1 puts one on each GPU. Two long requests run at
    the same time (one engine could run only one), each gets its own tokens,
    and /metrics adds the engines up."""
    backend = os.environ.get("GPTC_DEVICES_BACKEND", "cpu")  # cuda on the GPU machine
    srv = Server("--api-key", KEY, "--backend", backend, "--devices", "0,0", "--max-batch", "1", model=DEMO)
    try:
        port = srv.port
        m = metrics(port)
        check("--devices 0,0: two engines of max batch 1 make a max batch of 2 in /metrics",
              m.get("gptc_max_batch_size") == 2 and "devices 0,0" in srv.stderr(), (m.get("gptc_max_batch_size"),
                                                                                    srv.stderr()))
        reqs = [{"prompt": "ROMEO:", "max_tokens": 300, "temperature": 0, "ignore_eos": True},
                {"prompt": "JULIET:", "max_tokens": 300, "temperature": 0, "ignore_eos": True}]
        rs = [StreamReader(port, r) for r in reqs]
        for r in rs:
            r.start()
        for r in rs:
            r.first.wait(300)
        both = metrics(port).get("gptc_running_batch_size")
        for r in rs:
            r.join(300)
        texts = [joined(r.events)[0][0] for r in rs]
        alone = []
        for q in reqs:
            st, body = complete(port, q)
            alone.append(body["choices"][0]["text"] if st == 200 else None)
        check("--devices 0,0: two requests run at once, one on each engine (running batch 2)",
              both == 2 and all(r.done for r in rs), (both, [r.done for r in rs], [r.error for r in rs]))
        check("--devices 0,0: each stream is what the same request gets alone",
              texts == alone and texts[0] != texts[1], (texts, alone))
    finally:
        stop_server(srv, "the two-engine server")
    r = subprocess.run([BIN, "serve", "-m", MODEL, "--backend", backend, "--devices", "0,1" if backend == "cpu"
                        else "0,1023", "--port", "0"], capture_output=True, timeout=120)
    err = r.stderr.decode()
    check("--devices naming a device the backend lacks: exits non-zero naming the device",
          r.returncode not in (0, None) and "device: 1" in err and not sanitizer_hit(err), (r.returncode, err))
    r = subprocess.run([BIN, "serve", "--devices", "0,x"], capture_output=True, timeout=60)
    check("--devices 0,x: exit 2 naming the flag", r.returncode == 2 and "--devices" in r.stderr.decode(), r.stderr)


def main():
    if not os.path.isfile(os.path.join(MODEL, "config.json")):
        print("fixture model not found: %s" % MODEL)
        return 1
    t_start = time.monotonic()
    test_startup_errors()
    srv = Server("--api-key", KEY, "--max-batch", "64")
    try:
        port = srv.port
        test_routes(port)
        test_curl(port)
        test_openai(port)
        test_penalties(port)
        test_logprobs(port)
        test_nul(port)
        test_beams(port)
        test_metrics_exact(port)
        test_concurrent(port)
        test_bad_requests(port)
        test_auth(port)
    finally:
        stop_server(srv, "the main server")
    demo = Server("--api-key", KEY, "--max-batch", "8", *CPU, model=DEMO)
    try:
        test_continuous_batching(demo.port)
        test_disconnect(demo.port)
    finally:
        stop_server(demo, "the demo server")
    test_limits()
    test_timeout()
    test_devices()
    print("%d passed, %d failed (%.1f s)" % (COUNTS.passed, COUNTS.failed, time.monotonic() - t_start))
    return 1 if COUNTS.failed else 0


if __name__ == "__main__":
    sys.exit(main())
