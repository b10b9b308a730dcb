#!/usr/bin/env python3
"""gptc vs Hugging Face transformers on the CPU, side by side in one run.

Both run the same shapes (random weights; speed does not depend on values),
fp32, batch 1, greedy, the same thread count:

    python3 bench/cpu_bench.py [--shapes gpt2] [--threads N] [--prompt-len 16] [--new-tokens 64]

gptc is run through `gptc bench --json`, which also measures the machine's
memory copy bandwidth in the same process. transformers is timed with
generate() (its own K/V cache) and a plain forward for prefill. Writes a
Markdown table to bench/results/cpu.md and prints it.
Needs: build/gptc, and torch + transformers (pip install torch transformers).
"""
import argparse, json, os, platform, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16),
         "gpt2-large": (36, 1280, 20), "gpt2-xl": (48, 1600, 25)}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_gptc(gptc, shape, threads, p, n, text):
    cmd = [gptc, "bench", "--shape", shape, "--threads", str(threads), "--prompt-len", str(p),
           "--new-tokens", str(n), "--json"]
    if text:
        cmd += ["--tokenizer", os.path.join(ROOT, "tests", "fixtures", "gpt2-tokenizer"), "--text", text]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_hf(shape, threads, p, n, reps):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.set_num_threads(threads)
    n_layer, n_embd, n_head = SIZES[shape]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)).eval()
    ids = torch.randint(0, 50257, (1, p))
    mask = torch.ones_like(ids)

    def gen(k):
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k,
                           do_sample=False, pad_token_id=0)

    def prefill():
        with torch.no_grad():
            model(ids, use_cache=False)

    gen(4)
    prefill()
    t_pre = statistics.median(timeit(prefill) for _ in range(reps))
    # Decode time per token: difference between n and 1 new tokens, so that
    # prefill and set-up cancel.
    t_n = statistics.median(timeit(lambda: gen(n)) for _ in range(reps))
    t_1 = statistics.median(timeit(lambda: gen(1)) for _ in range(reps))
    return {"prefill_tokens_per_s": p / t_pre, "decode_ms_per_token": 1e3 * (t_n - t_1) / (n - 1),
            "torch": torch.__version__}


def timeit(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="gpt2")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gptc", default=os.path.join(ROOT, "build", "gptc"))
    ap.add_argument("--text", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"),
                    help="text for the tokenizer timing")
    args = ap.parse_args()
    text = args.text if os.path.exists(args.text) else None
    rows = []
    for shape in args.shapes.split(","):
        g = run_gptc(args.gptc, shape, args.threads, args.prompt_len, args.new_tokens, text)
        print(json.dumps({"engine": "gptc", **g}), flush=True)
        h = run_hf(shape, args.threads, args.prompt_len, args.new_tokens, args.reps)
        print(json.dumps({"engine": "transformers", "model": shape, **h}), flush=True)
        rows.append((shape, g, h))
    lines = [f"# CPU benchmark: {cpu_name()}, {args.threads} threads",
             "",
             f"Batch 1, fp32, greedy, {args.prompt_len}-token prompt, {args.new_tokens} new tokens; "
             f"transformers {rows[0][2]['torch'] if rows else ''} (torch) in the same run.",
             "",
             "| shape | gptc decode ms/token | transformers decode ms/token | speed-up | gptc weights GB/s "
             "| memory copy GB/s (read+write) | decode / copy | memory read GB/s | decode / read "
             "| gptc prefill tok/s | transformers prefill tok/s "
             "| tokenize MB/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape, g, h in rows:
        tok = g["tokenize_mb_per_s"]
        lines.append(f"| {shape} | {g['decode_ms_per_token']:.2f} | {h['decode_ms_per_token']:.2f} "
                     f"| {h['decode_ms_per_token'] / g['decode_ms_per_token']:.2f}x | {g['decode_gb_per_s']:.2f} "
                     f"| {g['copy_gb_per_s']:.2f} | {100 * g['decode_fraction_of_copy']:.0f}% "
                     f"| {g['read_gb_per_s']:.2f} | {100 * g['decode_fraction_of_read']:.0f}% "
                     f"| {g['prefill_tokens_per_s']:.0f} | {h['prefill_tokens_per_s']:.0f} "
                     f"| {tok if tok is None else round(tok, 2)} |")
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "cpu.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    sys.exit(main())
