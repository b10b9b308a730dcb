#!/usr/bin/env python3
"""Golden-file test: run the gptc CLI on every fixture in tests/fixtures/ and compare with the
float64 transformers references recorded in <fixture>/expected.json by tools/make_fixtures.py.

    GPTC_BIN=build/gptc python3 tests/test_fixtures.py [-k SUBSTRING] [-j N] [-v]

Only the Python standard library is needed.  The CLI contract used:
    gptc logits     -m DIR --prompt-ids 1,2,3                      -> n_vocab floats, one line
    gptc generate   -m DIR --prompt-ids 1,2,3 | --prompt TEXT
                    [--max-new-tokens N] --greedy [--repetition-penalty R]
                    [--no-repeat-ngram-size N] [--min-new-tokens N] --ids
                                                                   -> generated ids, one line
    gptc tokenize   -m DIR  (text on stdin)                        -> ids
    gptc perplexity -m DIR --file F --stride S                     -> last line "perplexity: X"

Comparisons:
  * token ids (generate, tokenize): identical.  The references are safe to compare exactly: at
    every greedy step the float64 top1 - top2 margin of the processed scores is at least
    1e-3 * max(1, |top1|) (checked by make_fixtures.py), and a float32 run of the same checkpoint
    in torch reproduced every case.
  * logits: |got - ref| <= LOGIT_ATOL * max(1, max|ref|) + LOGIT_RTOL * |ref|, elementwise.
    Why 2e-5: float32 has u = 6e-8; these models have dot products of at most 256 terms, <= 3
    layers and LayerNorms that keep activations O(1), so a float32 forward (any summation order)
    is expected at ~1e-6 of the logit scale: torch float32 on the very same checkpoints is off by
    at most 1.9e-6 * max(1, max|ref|) over all fixtures (printed by make_fixtures.py), 10x below
    the tolerance.  fp16/bf16 checkpoints need nothing extra: the reference was computed from
    the rounded stored weights.  Much looser would stop catching near-miss bugs: computing the
    tanh GELU instead of the erf one (gelu vs gelu_new) moves these logits by 3x-13x the tolerance.
  * perplexity: relative error <= 1e-4 (torch float32 is within 4e-8).
On mismatch: fixture, case, command line, expected vs got (first differing index); keeps going;
prints "N passed, M failed" and exits 1 if anything failed or the CLI is missing.
"""

import argparse
import concurrent.futures
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

LOGIT_ATOL = 2e-5
LOGIT_RTOL = 5e-6
PPL_RTOL = 1e-4

HERE = os.path.dirname(os.path.abspath(__file__))


def short(seq, n=20):
    seq = list(seq)
    if len(seq) <= 2 * n:
        return "[" + ", ".join(map(str, seq)) + "]"
    return "[" + ", ".join(map(str, seq[:n])) + f", ... ({len(seq)} items) ..., " + \
        ", ".join(map(str, seq[-3:])) + "]"


def gen_flags(kwargs):
    """transformers generate() kwargs -> gptc generate flags."""
    out = []
    for k, v in kwargs.items():
        if k == "max_new_tokens":
            out += ["--max-new-tokens", str(int(v))]
        elif k == "do_sample":
            if v:
                raise ValueError("do_sample=True cases are not supported by this test")
            out.append("--greedy")
        elif k == "repetition_penalty":
            out += ["--repetition-penalty", repr(float(v))]
        elif k == "no_repeat_ngram_size":
            out += ["--no-repeat-ngram-size", str(int(v))]
        elif k == "min_new_tokens":
            out += ["--min-new-tokens", str(int(v))]
        elif k == "pad_token_id":
            pass  # batch of one: padding never happens
        elif k == "num_beams":
            out += ["--num-beams", str(int(v))]
        elif k == "num_return_sequences":
            out += ["--num-return-sequences", str(int(v))]
        elif k == "length_penalty":
            out += ["--length-penalty", repr(float(v))]
        elif k == "early_stopping":
            out += ["--early-stopping", v if isinstance(v, str) else ("true" if v else "false")]
        elif k == "eos_token_id":
            ids = v if isinstance(v, list) else [v]
            out += ["--eos-token-id", ",".join(str(int(i)) for i in ids)]
        else:
            raise ValueError(f"generate kwarg {k!r} has no gptc flag mapping")
    if "--greedy" not in out:
        out.append("--greedy")
    return out


# ------------------------------------------------------------------------------------ checkers
# each returns None when fine, else a list of message lines

def parse_ints(text):
    try:
        return [int(t) for t in text.split()], None
    except ValueError as e:
        return None, f"output is not a list of integers ({e}): {text[:200]!r}"


def check_ids(expected):
    def check(stdout):
        got, err = parse_ints(stdout)
        if err:
            return [err]
        if got == expected:
            return None
        i = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
        e_i = expected[i] if i < len(expected) else "<end>"
        g_i = got[i] if i < len(got) else "<end>"
        return [f"expected ({len(expected)}): {short(expected)}",
                f"got      ({len(got)}): {short(got)}",
                f"first difference at index {i}: expected {e_i}, got {g_i}"]
    return check


def check_logits(ref):
    scale = max(1.0, max(abs(x) for x in ref))

    def check(stdout):
        try:
            got = [float(t) for t in stdout.split()]
        except ValueError as e:
            return [f"output is not a list of numbers ({e}): {stdout[:200]!r}"]
        if len(got) != len(ref):
            return [f"expected {len(ref)} logits, got {len(got)}"]
        bad, worst, worst_i = [], -1.0, -1
        for i, (g, r) in enumerate(zip(got, ref)):
            tol = LOGIT_ATOL * scale + LOGIT_RTOL * abs(r)
            d = abs(g - r)
            if not d <= tol:  # also catches NaN
                bad.append(i)
            ratio = d / tol if d == d else math.inf
            if ratio > worst:
                worst, worst_i = ratio, i
        if not bad:
            return None
        i = bad[0]
        return [f"{len(bad)} of {len(ref)} logits out of tolerance "
                f"({LOGIT_ATOL:g}*{scale:.4g} + {LOGIT_RTOL:g}*|ref|)",
                f"first at index {i}: expected {ref[i]!r}, got {got[i]!r}",
                f"worst at index {worst_i}: expected {ref[worst_i]!r}, got {got[worst_i]!r} "
                f"({worst:.3g}x tolerance)"]
    return check


def check_ppl(expected):
    def check(stdout):
        lines = [ln for ln in stdout.splitlines() if ln.strip()]
        m = re.match(r"\s*perplexity:\s*(\S+)\s*$", lines[-1]) if lines else None
        if not m:
            return [f"last line of stdout is not 'perplexity: X': {lines[-1][:200] if lines else '<empty>'!r}"]
        try:
            got = float(m.group(1))
        except ValueError:
            return [f"cannot parse perplexity {m.group(1)!r}"]
        rel = abs(got - expected) / abs(expected)
        if rel <= PPL_RTOL:
            return None
        return [f"expected perplexity {expected!r}, got {got!r} (relative error {rel:.3g} > {PPL_RTOL:g})"]
    return check


# ------------------------------------------------------------------------------------ cases

def check_seqs(expected):
    """One line of ids per returned sequence, best first (beam search)."""
    def check(stdout):
        lines = stdout.strip("\n").split("\n")
        if len(lines) != len(expected):
            return [f"expected {len(expected)} lines, got {len(lines)}: {stdout[:200]!r}"]
        for k, (line, exp) in enumerate(zip(lines, expected)):
            msg = check_ids(exp)(line)
            if msg:
                return [f"sequence {k}:"] + msg
        return None
    return check


def build_cases(fixtures_dir, name, exp, gbin):
    d = os.path.join(fixtures_dir, name)
    cases = []  # (case name, argv, stdin bytes or None, checker)

    for i, c in enumerate(exp.get("logits", [])):
        argv = [gbin, "logits", "-m", d, "--prompt-ids", ",".join(map(str, c["prompt"]))]
        cases.append((f"logits[{i}] (prompt length {len(c['prompt'])})", argv, None, check_logits(c["logits"])))

    gen_sets = [("greedy", exp.get("greedy", [])), ("generate_cases", exp.get("generate_cases", [])),
                ("text_greedy", exp.get("text_greedy", []))]
    for key, lst in gen_sets:
        for i, c in enumerate(lst):
            label = f"{key}[{i}]" + (f" {c['name']}" if "name" in c else "")
            if "prompt_text" in c:
                src = ["--prompt", c["prompt_text"]]
                label += f" text={c['prompt_text']!r}"
            else:
                src = ["--prompt-ids", ",".join(map(str, c["prompt"]))]
            try:
                flags = gen_flags(c["kwargs"])
            except ValueError as e:
                cases.append((label, None, None, str(e)))
                continue
            argv = [gbin, "generate", "-m", d] + src + flags + ["--ids"]
            cases.append((label, argv, None, check_ids(c["output"])))

    beam_file = os.path.join(d, "beam.json")
    if os.path.exists(beam_file):
        with open(beam_file) as f:
            beam = json.load(f)
        for c in beam["cases"]:
            label = f"beam {c['name']}"
            try:
                flags = gen_flags(c["kwargs"])
            except ValueError as e:
                cases.append((label, None, None, str(e)))
                continue
            argv = [gbin, "generate", "-m", d, "--prompt-ids", ",".join(map(str, c["prompt"]))] + flags + ["--ids"]
            cases.append((label, argv, None, check_seqs(c["outputs"])))

    batch_file = os.path.join(d, "batch.json")
    if os.path.exists(batch_file):
        with open(batch_file) as f:
            batch = json.load(f)
        for c in batch["cases"]:
            try:
                flags = gen_flags(c["kwargs"])
            except ValueError as e:
                cases.append((f"batch {c['name']}", None, None, str(e)))
                continue
            stdin = "".join(",".join(map(str, p)) + "\n" for p in c["prompts"]).encode()
            for bs in ("2", "32"):
                argv = [gbin, "generate", "-m", d, "--prompt-ids-file", "-", "--batch-size", bs] + flags + ["--ids"]
                cases.append((f"batch {c['name']} ({len(c['prompts'])} prompts, batch size {bs})", argv, stdin,
                              check_seqs(c["outputs"])))

    for i, c in enumerate(exp.get("tokenizer", [])):
        argv = [gbin, "tokenize", "-m", d]
        cases.append((f"tokenizer[{i}] text={c['text'][:60]!r}", argv, c["text"].encode("utf-8"),
                      check_ids(c["ids"])))

    for c in exp.get("perplexity", []):
        argv = [gbin, "perplexity", "-m", d, "--file", os.path.join(fixtures_dir, c["file"]),
                "--stride", str(c["stride"])]
        cases.append((f"perplexity stride={c['stride']}", argv, None, check_ppl(c["perplexity"])))
    return cases


def run_case(argv, stdin, checker, timeout):
    t0 = time.time()
    res = _run_case_checked(argv, stdin, checker, timeout)
    return res, time.time() - t0


def _run_case_checked(argv, stdin, checker, timeout):
    if argv is None:  # harness-level problem recorded at build time
        return [f"cannot run case: {checker}"]
    return _run_case(argv, stdin, checker, timeout)


def _run_case(argv, stdin, checker, timeout):
    try:
        p = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"timed out after {timeout} s"]
    except OSError as e:
        return [f"could not start: {e}"]
    stderr = p.stderr.decode("utf-8", "replace").strip()
    if p.returncode != 0:
        msg = [f"exit status {p.returncode}" + (" (killed by signal %d)" % -p.returncode if p.returncode < 0 else "")]
        if stderr:
            msg += ["stderr: " + ln for ln in stderr.splitlines()[-8:]]
        return msg
    try:
        stdout = p.stdout.decode("utf-8")
    except UnicodeDecodeError:
        return ["stdout is not valid UTF-8"]
    res = checker(stdout)
    if res and stderr:
        res += ["stderr: " + ln for ln in stderr.splitlines()[-4:]]
    return res


def main():
    ap = argparse.ArgumentParser(description="gptc golden-file test against transformers fixtures")
    root = os.environ.get("GPTC_ROOT", os.path.dirname(HERE))
    ap.add_argument("--fixtures", default=os.path.join(root, "tests", "fixtures"))
    ap.add_argument("--bin", default=os.environ.get("GPTC_BIN"), help="gptc CLI (default: $GPTC_BIN)")
    ap.add_argument("-k", dest="filter", default=None, help="only fixtures whose name contains this")
    ap.add_argument("-j", "--jobs", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per CLI run")
    ap.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    args = ap.parse_args()

    if not args.bin:
        print("FAIL: GPTC_BIN is not set (path of the gptc CLI); pass --bin or set GPTC_BIN", flush=True)
        print("0 passed, 1 failed")
        return 1
    gbin = os.path.abspath(args.bin)
    if not (os.path.isfile(gbin) and os.access(gbin, os.X_OK)):
        print(f"FAIL: GPTC_BIN={args.bin} is not an executable file", flush=True)
        print("0 passed, 1 failed")
        return 1

    fdir = os.path.abspath(args.fixtures)
    names = sorted(n for n in (os.listdir(fdir) if os.path.isdir(fdir) else [])
                   if os.path.isfile(os.path.join(fdir, n, "expected.json")))
    if args.filter:
        names = [n for n in names if args.filter in n]
    if not names:
        print(f"FAIL: no fixtures (folders with expected.json) in {fdir}"
              + (f" matching {args.filter!r}" if args.filter else ""))
        print("0 passed, 1 failed")
        return 1

    jobs = []
    for n in names:
        with open(os.path.join(fdir, n, "expected.json"), encoding="utf-8") as f:
            exp = json.load(f)
        for label, argv, stdin, checker in build_cases(fdir, n, exp, gbin):
            jobs.append((n, label, argv, stdin, checker))

    t0 = time.time()
    results, durations = {}, {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(run_case, argv, stdin, checker, args.timeout): k
                for k, (n, label, argv, stdin, checker) in enumerate(jobs)}
        for fut in concurrent.futures.as_completed(futs):
            k = futs[fut]
            try:
                results[k], durations[k] = fut.result()
            except Exception as e:  # a bug in a checker must not hide the other results
                results[k], durations[k] = [f"test harness error: {type(e).__name__}: {e}"], 0.0

    passed = failed = 0
    per_fixture = {}
    for k, (n, label, argv, stdin, checker) in enumerate(jobs):
        res = results[k]
        pf = per_fixture.setdefault(n, [0, 0])
        if res is None:
            passed += 1
            pf[0] += 1
            if args.verbose:
                print(f"ok   {n}: {label}")
            continue
        failed += 1
        pf[1] += 1
        print(f"FAIL {n}: {label}")
        if argv is not None:
            print("  command: " + shlex.join(argv) + (" < (stdin: %d bytes)" % len(stdin) if stdin else ""))
        for ln in res:
            print("  " + ln)
    print()
    for n in names:
        p, f = per_fixture.get(n, [0, 0])
        print(f"  {n:<40} {p:4d} passed {f:4d} failed")
    slow = sorted(durations, key=durations.get, reverse=True)[:3]
    print("  slowest: " + "; ".join(f"{jobs[k][0]}: {jobs[k][1]} {durations[k]:.2f} s" for k in slow))
    print(f"\n{passed} passed, {failed} failed  ({len(names)} fixtures, {time.time() - t0:.1f} s, "
          f"{args.jobs} jobs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
