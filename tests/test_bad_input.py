#!/usr/bin/env python3
"""Bad input must fail cleanly: non-zero exit, one line on stderr naming the
file / field / argument at fault, never a crash or a sanitizer report.

Every model folder is written by hand (struct + json, no torch) from a small
valid GPT-2: vocab 64, n_embd 8, 1 layer, 2 heads, n_positions 16, F32. Each
case corrupts one thing precisely. Positive controls check that the valid
variants (F16, BF16, untied, sharded, original key layout with its BOOL/U8
attention buffers) load and generate.

Env: GPTC_BIN (the CLI), GPTC_SHARED (for data/gpt2-tokenizer).
Other scripts import write_model / write_safetensors / model_tensors from here.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

V, C, L, H, P = 64, 8, 1, 2, 16
F = 4 * C

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
              "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def shared_dir():
    d = os.environ.get("GPTC_SHARED")
    if not d:
        d = os.path.join(os.environ.get("GPTC_ROOT", os.path.join(os.path.dirname(__file__), "..")),
                         "..", "shared")
    return d


def tokenizer_dir():
    return os.path.join(shared_dir(), "data", "gpt2-tokenizer")


def to_bytes(arr, dtype):
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if dtype == "F32":
        return arr.astype("<f4").tobytes()
    if dtype == "F16":
        return arr.astype("<f2").tobytes()
    if dtype == "BF16":  # round-to-nearest-even top half of the fp32 bits
        u = arr.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return u.astype("<u2").tobytes()
    raise ValueError(dtype)


def model_tensors(vocab=V, n_embd=C, n_layer=L, n_pos=P, n_inner=None, dtype="F32", prefix="transformer.",
                  seed=0, untied=False):
    """Ordered list of [name, dtype, shape, bytes] for a GPT2LMHeadModel."""
    rng = np.random.default_rng(seed)
    Cc, Ff = n_embd, n_inner or 4 * n_embd
    spec = [("wte.weight", (vocab, Cc)), ("wpe.weight", (n_pos, Cc))]
    for l in range(n_layer):
        h = "h.%d." % l
        spec += [(h + "ln_1.weight", (Cc,)), (h + "ln_1.bias", (Cc,)),
                 (h + "attn.c_attn.weight", (Cc, 3 * Cc)), (h + "attn.c_attn.bias", (3 * Cc,)),
                 (h + "attn.c_proj.weight", (Cc, Cc)), (h + "attn.c_proj.bias", (Cc,)),
                 (h + "ln_2.weight", (Cc,)), (h + "ln_2.bias", (Cc,)),
                 (h + "mlp.c_fc.weight", (Cc, Ff)), (h + "mlp.c_fc.bias", (Ff,)),
                 (h + "mlp.c_proj.weight", (Ff, Cc)), (h + "mlp.c_proj.bias", (Cc,))]
    spec += [("ln_f.weight", (Cc,)), ("ln_f.bias", (Cc,))]
    out = []
    for name, shape in spec:
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            a = 0.5 * rng.standard_normal(shape)
        out.append([prefix + name, dtype, list(shape), to_bytes(a, dtype)])
    if untied:
        a = 0.5 * rng.standard_normal((vocab, Cc))
        out.append(["lm_head.weight", dtype, [vocab, Cc], to_bytes(a, dtype)])
    return out


def safetensors_bytes(tensors, header_override=None, metadata=None, pad=True):
    """tensors: [name, dtype, shape, bytes] laid out back to back. header_override
    maps a name to a dict merged into its header entry (to corrupt fields)."""
    header, data, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        data.append(raw)
        off += len(raw)
    for name, fields in (header_override or {}).items():
        header.setdefault(name, {}).update(fields)
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(data)


def write_safetensors(path, tensors, **kw):
    with open(path, "wb") as f:
        f.write(safetensors_bytes(tensors, **kw))


def base_config(**kw):
    cfg = {"model_type": "gpt2", "vocab_size": V, "n_embd": C, "n_layer": L, "n_head": H,
           "n_positions": P, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
           "bos_token_id": 0, "eos_token_id": V - 1}
    cfg.update(kw)
    return cfg


def write_model(d, tensors=None, config=None, tokenizer=True, **tkw):
    os.makedirs(d, exist_ok=True)
    if tensors is None:
        tensors = model_tensors(**tkw)
    if config is None:
        config = base_config()
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(config if isinstance(config, str) else json.dumps(config))
    if tensors is not False:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    if tokenizer:
        for n in ("vocab.json", "merges.txt"):
            dst = os.path.join(d, n)
            try:
                os.symlink(os.path.join(tokenizer_dir(), n), dst)
            except OSError:
                shutil.copy(os.path.join(tokenizer_dir(), n), dst)
    return d


# ---------------------------------------------------------------------------

BIN = os.environ.get("GPTC_BIN", "gptc")
IDS = ["--prompt-ids", "1,2", "--max-new-tokens", "2", "--ids", "--threads", "1"]
passed, failed = 0, 0


def run(args, timeout=60):
    return subprocess.run([BIN] + args, capture_output=True, timeout=timeout)


def sanitizer_hit(err):
    return any(s in err for s in ("AddressSanitizer", "runtime error", "LeakSanitizer",
                                  "UndefinedBehaviorSanitizer", "Segmentation fault"))


def report(name, problems, r):
    global passed, failed
    if problems:
        failed += 1
        print("FAIL %s: %s" % (name, "; ".join(problems)))
        print("   rc=%d stderr=%r stdout=%r" % (r.returncode, r.stderr.decode(errors="replace")[:600],
                                                r.stdout.decode(errors="replace")[:200]))
    else:
        passed += 1
        print("ok   %s: %s" % (name, r.stderr.decode(errors="replace").strip()[:150]))


def expect_fail(name, args, *needles):
    """Non-zero exit (no signal), exactly one stderr line containing every needle."""
    r = run(args)
    err = r.stderr.decode(errors="replace")
    problems = []
    if r.returncode < 0:
        problems.append("killed by signal %d" % -r.returncode)
    elif r.returncode == 0:
        problems.append("exit status 0")
    if sanitizer_hit(err):
        problems.append("sanitizer report")
    lines = err.splitlines()
    if len(lines) != 1 or not err.endswith("\n"):
        problems.append("stderr has %d lines, want exactly 1" % len(lines))
    for n in needles:
        if n not in err:
            problems.append("stderr lacks %r" % n)
    report(name, problems, r)
    return r


def expect_ok(name, args, check=None):
    r = run(args)
    err = r.stderr.decode(errors="replace")
    problems = []
    if r.returncode != 0:
        problems.append("exit status %d" % r.returncode)
    if sanitizer_hit(err):
        problems.append("sanitizer report")
    if check and r.returncode == 0:
        msg = check(r.stdout.decode(errors="replace"))
        if msg:
            problems.append(msg)
    report(name, problems, r)
    return r


def n_ids(k):
    def check(out):
        toks = out.split()
        if len(toks) != k or not all(t.isdigit() and int(t) < V for t in toks):
            return "want %d ids below %d, got %r" % (k, V, out)
    return check


def main():
    if not os.path.isfile(os.path.join(tokenizer_dir(), "vocab.json")):
        print("GPT-2 tokenizer not found under %s" % tokenizer_dir())
        return 1
    tmp = tempfile.mkdtemp(prefix="gptc_bad_")
    try:
        return cases(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cases(tmp):
    counter = [0]

    def fresh(**kw):
        counter[0] += 1
        return write_model(os.path.join(tmp, "m%03d" % counter[0]), **kw)

    def tensors_without(name, **kw):
        return [t for t in model_tensors(**kw) if t[0] != name]

    def gen(d, *extra):
        return ["generate", "-m", d] + IDS + list(extra)

    # ---- positive controls ----
    base = fresh()
    base_file = os.path.join(base, "model.safetensors")
    expect_ok("valid F32 model, --prompt-ids", gen(base), n_ids(2))
    expect_ok("valid model, text prompt", ["generate", "-m", base, "--prompt", "A", "--max-new-tokens", "3",
                                           "--threads", "1"])
    expect_ok("valid model, sampling", gen(base, "--do-sample", "--seed", "3", "--top-k", "5", "--top-p",
                                           "0.9", "--temperature", "0.7", "--repetition-penalty", "1.3",
                                           "--no-repeat-ngram-size", "2"), n_ids(2))
    expect_ok("valid F16 model", gen(fresh(dtype="F16")), n_ids(2))
    expect_ok("valid BF16 model", gen(fresh(dtype="BF16")), n_ids(2))
    expect_ok("untied model with lm_head.weight",
              gen(fresh(untied=True, config=base_config(tie_word_embeddings=False))), n_ids(2))
    # Original gpt2 upload layout: no "transformer." prefix, plus h.N.attn.bias
    # (BOOL or U8 causal mask) and h.N.attn.masked_bias buffers that are ignored.
    t = model_tensors(prefix="")
    t.append(["h.0.attn.bias", "BOOL", [1, 1, P, P], np.tril(np.ones((P, P), np.uint8)).tobytes()])
    t.append(["h.0.attn.masked_bias", "F32", [], struct.pack("<f", -1e4)])
    expect_ok("original layout with BOOL attn.bias buffer", gen(fresh(tensors=t)), n_ids(2))
    t = model_tensors(prefix="")
    t.append(["h.0.attn.bias", "U8", [1, 1, P, P], np.tril(np.ones((P, P), np.uint8)).tobytes()])
    expect_ok("original layout with U8 attn.bias buffer", gen(fresh(tensors=t)), n_ids(2))
    d = fresh(tensors=False)
    write_safetensors(os.path.join(d, "model.safetensors"), model_tensors(), pad=False,
                      metadata={"format": "pt"})
    expect_ok("unpadded header (unaligned data) and __metadata__", gen(d), n_ids(2))
    t = model_tensors(dtype="F16")
    t.append(["transformer.h.0.attn.masked_bias", "F32", [], struct.pack("<f", -1e4)])
    t.append(["extra.empty", "F32", [0, 8], b""])
    expect_ok("extra unused tensors, an empty one included", gen(fresh(tensors=t)), n_ids(2))
    # Sharded checkpoint.
    d = fresh(tensors=False)
    t = model_tensors()
    write_safetensors(os.path.join(d, "model-00001-of-00002.safetensors"), t[:7])
    write_safetensors(os.path.join(d, "model-00002-of-00002.safetensors"), t[7:])
    wm = {x[0]: "model-00001-of-00002.safetensors" for x in t[:7]}
    wm.update({x[0]: "model-00002-of-00002.safetensors" for x in t[7:]})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)
    sharded = d
    expect_ok("valid sharded model", gen(d), n_ids(2))
    expect_ok("prompt + max_new_tokens == n_positions",
              ["generate", "-m", base, "--prompt-ids", ",".join(["5"] * 10), "--max-new-tokens", "6",
               "--ids", "--threads", "1"], n_ids(6))
    expect_ok("--truncate keeps the end of a long prompt",
              ["generate", "-m", base, "--prompt-ids", ",".join(["5"] * 15), "--max-new-tokens", "8",
               "--truncate", "--ids", "--threads", "1"], n_ids(8))

    # ---- safetensors container ----
    good = open(base_file, "rb").read()
    hlen = struct.unpack("<Q", good[:8])[0]

    def with_file(name, blob):
        d = fresh(tensors=False)
        open(os.path.join(d, "model.safetensors"), "wb").write(blob)
        return d

    last = model_tensors()[-1][0]
    expect_fail("safetensors truncated in the data section", gen(with_file("t", good[:-20])),
                "model.safetensors", last, "out of bounds")
    expect_fail("safetensors truncated inside the header", gen(with_file("t", good[:8 + hlen // 2])),
                "model.safetensors", "header length")
    expect_fail("safetensors truncated to 5 bytes", gen(with_file("t", good[:5])),
                "model.safetensors", "truncated")
    expect_fail("empty safetensors file", gen(with_file("t", b"")), "model.safetensors")
    expect_fail("header length past the end of the file",
                gen(with_file("t", struct.pack("<Q", len(good)) + good[8:])), "model.safetensors",
                "header length")
    expect_fail("header length 2^64-1",
                gen(with_file("t", struct.pack("<Q", 2**64 - 1) + good[8:])), "model.safetensors",
                "header length")
    expect_fail("header is not JSON",
                gen(with_file("t", struct.pack("<Q", 8) + b"{not js}" + b"\0" * 64)),
                "model.safetensors", "JSON")
    expect_fail("header is a JSON array",
                gen(with_file("t", struct.pack("<Q", 8) + b"[1,2,3] " + b"\0" * 64)),
                "model.safetensors", "JSON")

    def corrupt(name, override, *needles, **kw):
        t = kw.pop("tensors", None) or model_tensors()
        d = fresh(tensors=False)
        write_safetensors(os.path.join(d, "model.safetensors"), t, header_override=override, **kw)
        expect_fail(name, gen(d), "model.safetensors", *needles)

    data_len = sum(len(x[3]) for x in model_tensors())
    wpe = "transformer.wpe.weight"
    corrupt("data_offsets past the data section", {wpe: {"data_offsets": [data_len - 8, data_len + 504]}},
            wpe, "out of bounds")
    corrupt("data_offsets end before start", {wpe: {"data_offsets": [600, 88]}}, wpe, "out of bounds")
    corrupt("data_offsets huge", {wpe: {"data_offsets": [2**52, 2**52 + 512]}}, wpe, "out of bounds")
    corrupt("data_offsets negative", {wpe: {"data_offsets": [-512, 0]}}, wpe, "data_offsets")
    corrupt("data_offsets not integers", {wpe: {"data_offsets": [0.5, 512.5]}}, wpe, "data_offsets")
    corrupt("data_offsets of three numbers", {wpe: {"data_offsets": [0, 1, 2]}}, wpe, "data_offsets")
    corrupt("data_offsets missing", {wpe: {"data_offsets": None}}, wpe, "data_offsets")
    # wte is [0, 2048); wpe (512 bytes) made to start inside it.
    corrupt("overlapping offsets", {wpe: {"data_offsets": [1024, 1536]}}, "overlap",
            "transformer.wte.weight", wpe)
    t = model_tensors()
    off = {}
    o = 0
    for x in t:
        off[x[0]] = [o, o + len(x[3])]
        o += len(x[3])
    corrupt("two tensors with the same offsets",
            {"transformer.ln_f.bias": {"data_offsets": off["transformer.ln_f.weight"]}},
            "overlap", "transformer.ln_f.weight", "transformer.ln_f.bias")
    corrupt("unknown dtype", {wpe: {"dtype": "F33"}}, wpe, "F33")
    corrupt("dtype not a string", {wpe: {"dtype": 4}}, wpe, "dtype")
    corrupt("shape product does not match the bytes", {wpe: {"shape": [P, C + 1]}}, wpe, "shape")
    corrupt("dtype size does not match the bytes", {wpe: {"dtype": "F16"}}, wpe, "F16")
    corrupt("shape with a negative dim", {wpe: {"shape": [-16, -8]}}, wpe, "shape")
    corrupt("shape with a fractional dim", {wpe: {"shape": [16.5, 8]}}, wpe, "shape")
    corrupt("shape product overflows", {wpe: {"shape": [2**40, 2**40, 2**40]}}, wpe, "shape")
    corrupt("shape is not a list", {wpe: {"shape": "16x8"}}, wpe, "shape")
    corrupt("too many dimensions", {wpe: {"shape": [1] * 9 + [P, C]}}, wpe, "dimensions")
    d = fresh(tensors=False)
    blob = safetensors_bytes(model_tensors())
    h = json.loads(blob[8:8 + hlen])
    h["transformer.wpe.weight"] = [1, 2]
    hj = json.dumps(h).encode()
    hj += b" " * (-len(hj) % 8)
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(hj)) + hj + blob[8 + hlen:])
    expect_fail("header entry not an object", gen(d), "model.safetensors", wpe)
    t = model_tensors()
    t.append(["evil\nname", "F32", [1], b"\0" * 4])
    corrupt("tensor name with a newline", {"evil\nname": {"dtype": "Q4"}}, "evil name", "Q4", tensors=t)
    # Duplicate key: JSON written by hand.
    d = fresh(tensors=False)
    hj = (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
          b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(hj)) + hj + b"\0" * 8)
    expect_fail("tensor named twice in the header", gen(d), "model.safetensors", "'a'")

    # ---- tensors vs config ----
    for missing in ("transformer.h.0.mlp.c_fc.bias", "transformer.ln_f.weight", "transformer.wpe.weight"):
        expect_fail("missing tensor %s" % missing, gen(fresh(tensors=tensors_without(missing))), missing)
    expect_fail("no wte at all", gen(fresh(tensors=tensors_without("transformer.wte.weight"))),
                "wte.weight")
    expect_fail("config says 2 layers, file has 1", gen(fresh(config=base_config(n_layer=2))),
                "transformer.h.1.")
    expect_fail("n_positions disagrees with wpe", gen(fresh(config=base_config(n_positions=32))),
                "transformer.wpe.weight", "config.json")
    expect_fail("vocab_size disagrees with wte", gen(fresh(config=base_config(vocab_size=65))),
                "transformer.wte.weight")
    expect_fail("n_embd disagrees with every tensor", gen(fresh(config=base_config(n_embd=16))),
                "transformer.wte.weight")
    expect_fail("n_inner disagrees with c_fc", gen(fresh(config=base_config(n_inner=16))),
                "transformer.h.0.mlp.c_fc.weight")
    # A config claiming a huge model must fail on the shapes, never try to
    # allocate terabytes (which ASan would also report).
    expect_fail("config claims a huge model",
                gen(fresh(config=base_config(vocab_size=1 << 24, n_embd=1 << 16, n_head=1))),
                "transformer.wte.weight")
    t = model_tensors()
    for x in t:
        if x[0] == "transformer.h.0.attn.c_attn.weight":  # stored transposed by mistake
            x[2] = [3 * C, C]
    expect_fail("transposed Conv1D weight", gen(fresh(tensors=t)), "transformer.h.0.attn.c_attn.weight")
    t = model_tensors()
    for x in t:
        if x[0] == "transformer.ln_f.bias":
            x[2] = [1, C]
    expect_fail("1-D tensor stored as 2-D", gen(fresh(tensors=t)), "transformer.ln_f.bias")
    expect_fail("tie_word_embeddings false without lm_head.weight",
                gen(fresh(config=base_config(tie_word_embeddings=False))), "lm_head.weight")
    t = model_tensors(untied=True)
    t[-1][2] = [V, C // 2]
    t[-1][3] = t[-1][3][: len(t[-1][3]) // 2]
    expect_fail("lm_head.weight of the wrong shape",
                gen(fresh(tensors=t, config=base_config(tie_word_embeddings=False))), "lm_head.weight")
    t = model_tensors()
    t[0] = ["transformer.wte.weight", "BOOL", [V, C], bytes(V * C)]
    expect_fail("BOOL wte", gen(fresh(tensors=t)), "transformer.wte.weight", "BOOL")
    t = model_tensors()
    t[1] = ["transformer.wpe.weight", "I32", [P, C], bytes(4 * P * C)]
    expect_fail("I32 wpe", gen(fresh(tensors=t)), "transformer.wpe.weight", "I32")
    t = model_tensors()
    t[1] = ["transformer.wpe.weight", "F64", [P, C], bytes(8 * P * C)]
    expect_fail("F64 wpe", gen(fresh(tensors=t)), "transformer.wpe.weight", "F64")
    expect_fail("no safetensors file", gen(fresh(tensors=False)), "model.safetensors")

    # ---- sharded ----
    def sharded_with(weight_map_edit, name, *needles, index_text=None):
        d = fresh(tensors=False)
        for f in os.listdir(sharded):
            if f.endswith(".safetensors"):
                shutil.copy(os.path.join(sharded, f), d)
        idx = json.load(open(os.path.join(sharded, "model.safetensors.index.json")))
        if weight_map_edit:
            weight_map_edit(idx["weight_map"])
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            f.write(index_text if index_text is not None else json.dumps(idx))
        expect_fail(name, gen(d), *needles)

    sharded_with(lambda w: w.update({"transformer.ln_f.bias": "model-00003-of-00003.safetensors"}),
                 "index names a missing shard", "model-00003-of-00003.safetensors")
    sharded_with(lambda w: w.update({"transformer.ln_f.bias": "../model-00002-of-00002.safetensors"}),
                 "shard name with ../", "model.safetensors.index.json", "transformer.ln_f.bias")
    sharded_with(lambda w: w.update({"transformer.ln_f.bias": "/etc/passwd"}),
                 "absolute shard path", "model.safetensors.index.json")
    sharded_with(lambda w: w.update({"transformer.ln_f.bias": ".."}),
                 "shard name ..", "model.safetensors.index.json")
    sharded_with(lambda w: w.update({"transformer.ln_f.bias": 7}),
                 "shard name not a string", "model.safetensors.index.json")
    sharded_with(None, "index is not JSON", "model.safetensors.index.json", index_text="{oops")
    sharded_with(None, "index without weight_map", "model.safetensors.index.json", "weight_map",
                 index_text='{"metadata": {}}')
    sharded_with(None, "index with an empty weight_map", "model.safetensors.index.json",
                 index_text='{"weight_map": {}}')

    def drop_shard2(w):
        for k in list(w):
            if w[k].startswith("model-00002"):
                del w[k]
    sharded_with(drop_shard2, "index omits the shard holding ln_f", "transformer.ln_f")

    # ---- config.json ----
    def cfg_fail(name, config, *needles):
        expect_fail(name, gen(fresh(config=config)), "config.json", *needles)

    cfg_fail("config.json malformed", '{"vocab_size": 64, "n_embd": 8,', "JSON")
    cfg_fail("config.json empty", "", "JSON")
    cfg_fail("config.json a list", "[1, 2]", "object")
    for field in ("n_embd", "vocab_size", "n_layer", "n_head"):
        c = base_config()
        del c[field]
        cfg_fail("config.json missing %s" % field, c, field)
    cfg_fail("n_layer: \"two\"", base_config(n_layer="two"), "n_layer")
    cfg_fail("n_embd: 8.5", base_config(n_embd=8.5), "n_embd")
    cfg_fail("n_head: 0", base_config(n_head=0), "n_head")
    cfg_fail("n_head: 3 does not divide n_embd", base_config(n_head=3), "n_head")
    cfg_fail("vocab_size: -1", base_config(vocab_size=-1), "vocab_size")
    cfg_fail("vocab_size: 1e300", base_config(vocab_size=1e300), "vocab_size")
    cfg_fail("n_positions: null-ish string", base_config(n_positions="16"), "n_positions")
    cfg_fail("layer_norm_epsilon: string", base_config(layer_norm_epsilon="1e-5"), "layer_norm_epsilon")
    cfg_fail("layer_norm_epsilon: negative", base_config(layer_norm_epsilon=-1), "layer_norm_epsilon")
    cfg_fail("unknown activation", base_config(activation_function="gelu_foo"), "activation_function",
             "gelu_foo")
    cfg_fail("activation not a string", base_config(activation_function=3), "activation_function")
    cfg_fail("scale_attn_weights: \"yes\"", base_config(scale_attn_weights="yes"), "scale_attn_weights")
    cfg_fail("tie_word_embeddings: 0", base_config(tie_word_embeddings=0), "tie_word_embeddings")
    cfg_fail("eos_token_id: \"x\"", base_config(eos_token_id="x"), "eos_token_id")
    cfg_fail("model_type: bert", base_config(model_type="bert"), "model_type")
    d = fresh()
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        f.write('{"top_p": 2}')
    expect_fail("generation_config.json: top_p 2", gen(d), "generation_config.json", "top_p")
    d = fresh()
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        f.write('{"do_sample": tru')
    expect_fail("generation_config.json malformed", gen(d), "generation_config.json")
    d = fresh()
    os.remove(os.path.join(d, "config.json"))
    expect_fail("no config.json", gen(d), "config.json")

    # ---- folders and tokenizer ----
    nowhere = os.path.join(tmp, "does-not-exist")
    expect_fail("model folder does not exist", gen(nowhere), nowhere)
    expect_fail("model folder is a file", gen(base_file), base_file)
    notok = fresh(tokenizer=False)
    expect_fail("text prompt without tokenizer files",
                ["generate", "-m", notok, "--prompt", "A", "--max-new-tokens", "2", "--threads", "1"],
                notok, "vocab.json")
    expect_ok("--prompt-ids --ids needs no tokenizer", gen(notok), n_ids(2))
    expect_fail("text output without tokenizer files",
                ["generate", "-m", notok, "--prompt-ids", "1,2", "--max-new-tokens", "2", "--threads", "1"],
                "vocab.json")
    expect_fail("tokenize without tokenizer files", ["tokenize", "-m", notok], notok)
    d = fresh(tokenizer=False)
    shutil.copy(os.path.join(tokenizer_dir(), "vocab.json"), d)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\nqqqzzz xxxyyy\n")
    expect_fail("merges.txt with unknown tokens",
                ["generate", "-m", d, "--prompt", "A", "--max-new-tokens", "2", "--threads", "1"],
                "merges.txt")

    # ---- arguments ----
    expect_fail("--prompt-ids 1,x", ["generate", "-m", base, "--prompt-ids", "1,x", "--ids"],
                "--prompt-ids", "'x'")
    expect_fail("--prompt-ids 99999", ["generate", "-m", base, "--prompt-ids", "99999", "--ids"],
                "--prompt-ids", "99999")
    expect_fail("--prompt-ids -1", ["generate", "-m", base, "--prompt-ids", "-1", "--ids"], "--prompt-ids")
    expect_fail("--prompt-ids 1.5", ["generate", "-m", base, "--prompt-ids", "1.5", "--ids"], "--prompt-ids")
    expect_fail("--prompt-ids 2^40", ["generate", "-m", base, "--prompt-ids", str(2**40), "--ids"],
                "--prompt-ids")
    expect_fail("--prompt-ids empty", ["generate", "-m", base, "--prompt-ids", " , ", "--ids"], "--prompt-ids")
    expect_fail("text prompt with ids past the model vocab",
                ["generate", "-m", base, "--prompt", "hello world", "--max-new-tokens", "2"], "--prompt:",
                "out of range")
    expect_fail("--prompt \"\"", ["generate", "-m", base, "--prompt", ""], "--prompt")
    expect_fail("no prompt", ["generate", "-m", base, "--ids"], "prompt")
    expect_fail("--prompt and --prompt-ids", ["generate", "-m", base, "--prompt", "A", "--prompt-ids", "1"],
                "--prompt")
    expect_fail("-m without a value", ["generate", "--prompt-ids", "1", "--ids", "-m"], "-m")
    expect_fail("prompt + max_new_tokens > n_positions",
                ["generate", "-m", base, "--prompt-ids", ",".join(["5"] * 10), "--max-new-tokens", "7", "--ids"],
                "n_positions")
    expect_fail("max_new_tokens >= n_positions even with --truncate",
                ["generate", "-m", base, "--prompt-ids", "1", "--max-new-tokens", "16", "--truncate", "--ids"],
                "max_new_tokens", "n_positions")
    expect_fail("default max_length 20 > n_positions 16",
                ["generate", "-m", base, "--prompt-ids", "1,2", "--ids"], "n_positions")
    bad_flags = [
        (["--max-new-tokens", "-1"], "--max-new-tokens"),
        (["--max-new-tokens", "abc"], "--max-new-tokens"),
        (["--max-new-tokens", "99999999999999999999"], "--max-new-tokens"),
        (["--min-new-tokens", "-1"], "--min-new-tokens"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-p", "nan"], "--top-p"),
        (["--temperature", "-1"], "--temperature"),
        (["--temperature", "inf"], "--temperature"),
        (["--temperature", ""], "--temperature"),
        (["--top-k", "-3"], "--top-k"),
        (["--temperature", "1e39"], "temperature"),
        (["--repetition-penalty", "1e39"], "repetition_penalty"),
        (["--top-p", "1e-50"], "top_p"),
        (["--repetition-penalty", "0"], "--repetition-penalty"),
        (["--repetition-penalty", "-2"], "--repetition-penalty"),
        (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size"),
        (["--seed", "-5"], "--seed"),
        (["--threads", "0"], "--threads"),
        (["--threads", "x"], "--threads"),
        (["--stop", ""], "--stop"),
        (["--bogus-flag"], "--bogus-flag"),
        (["--bogus-flag", "1"], "--bogus-flag"),
        (["--num-beams", "0"], "--num-beams"),
        (["--num-beams", "99999"], "--num-beams"),
        (["--num-return-sequences", "0"], "--num-return-sequences"),
        (["--num-beams", "2", "--num-return-sequences", "3"], "num_return_sequences"),
        (["--length-penalty", "nan"], "--length-penalty"),
        (["--length-penalty", "x"], "--length-penalty"),
        (["--early-stopping", "maybe"], "--early-stopping"),
        (["--eos-token-id", "x"], "--eos-token-id"),
        (["--eos-token-id", "99999"], "eos"),
        (["--eos-token-id", "1,2,3,4,5,6,7,8,9"], "--eos-token-id"),
        (["--num-beams", "2", "--do-sample"], "do_sample"),
    ]
    for extra, needle in bad_flags:
        expect_fail("generate %s" % " ".join(repr(e) if not e else e for e in extra),
                    ["generate", "-m", base, "--prompt-ids", "1", "--max-new-tokens", "2", "--ids"] + extra,
                    needle)
    # Values with newlines must not break the one-line rule.
    expect_fail("flag value with a newline", ["generate", "-m", base, "--prompt-ids", "1", "--threads", "1\n2"],
                "--threads")
    expect_fail("unknown flag with a newline", ["generate", "-m", base, "--prompt-ids", "1", "--bo\ngus", "1"],
                "--bo gus")
    expect_fail("unknown command with a newline", ["gen\nerate"], "gen erate")
    expect_fail("folder name with a newline", gen(os.path.join(tmp, "no\nsuch")), "no such")
    expect_fail("--max-new-tokens without a value", ["generate", "-m", base, "--prompt-ids", "1",
                                                     "--max-new-tokens"], "--max-new-tokens")
    expect_fail("-m without a value", ["generate", "--prompt-ids", "1", "-m"], "-m")
    expect_fail("unknown command", ["frobnicate"], "frobnicate")
    expect_fail("tokenize unknown flag", ["tokenize", "-m", base, "--bogus"], "--bogus")
    r = subprocess.run([BIN, "tokenize", "-m", base, "--decode"], input=b"1 x", capture_output=True)
    report("tokenize --decode bad id", [] if r.returncode > 0 and b"'x'" in r.stderr and
           len(r.stderr.splitlines()) == 1 else ["bad result"], r)
    r = subprocess.run([BIN, "tokenize", "-m", base, "--decode"], input=b"99999999", capture_output=True)
    report("tokenize --decode id out of range", [] if r.returncode > 0 and b"99999999" in r.stderr and
           len(r.stderr.splitlines()) == 1 and not sanitizer_hit(r.stderr.decode()) else ["bad result"], r)
    expect_fail("perplexity without --file", ["perplexity", "-m", base], "--file")
    expect_fail("perplexity missing file", ["perplexity", "-m", base, "--file", os.path.join(tmp, "nope.txt")],
                "nope.txt")
    txt = os.path.join(tmp, "text.txt")
    open(txt, "w").write("A" * 40)
    expect_fail("perplexity --stride 0", ["perplexity", "-m", base, "--file", txt, "--stride", "0"], "--stride")
    expect_fail("perplexity --stride past n_positions", ["perplexity", "-m", base, "--file", txt, "--stride", "17"],
                "--stride")
    expect_fail("logits without --prompt-ids", ["logits", "-m", base], "--prompt-ids")
    expect_fail("logits id out of range", ["logits", "-m", base, "--prompt-ids", "64"], "64")
    expect_fail("logits prompt too long", ["logits", "-m", base, "--prompt-ids", ",".join(["1"] * 17)],
                "n_positions")
    expect_fail("bench unknown shape", ["bench", "--shape", "gpt5"], "gpt5")
    expect_fail("bench --prompt-len 0", ["bench", "--shape", "tiny", "--prompt-len", "0"], "--prompt-len")
    expect_fail("bench -m and --shape", ["bench", "-m", base, "--shape", "tiny"], "--shape")
    expect_fail("bench --top-k without --do-sample", ["bench", "--shape", "tiny", "--top-k", "5"], "--do-sample")
    expect_fail("bench --do-sample --batch", ["bench", "--shape", "tiny", "--do-sample", "--batch", "2"], "--do-sample")
    expect_fail("bench --top-p 0", ["bench", "--shape", "tiny", "--do-sample", "--top-p", "0"], "--top-p")
    expect_fail("bench --temperature -1", ["bench", "--shape", "tiny", "--do-sample", "--temperature", "-1"],
                "--temperature")

    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
