#!/usr/bin/env python3
"""gptc on a GPU against Hugging Face transformers on the same card, in one run.

    python3 bench/gpu_bench.py [--shapes gpt2,gpt2-medium,gpt2-large,gpt2-xl] [--gptc build/gptc]

For each GPT-2 shape (random weights; speed does not depend on values), fp16,
batch 1, greedy, 16-token prompt, 256 new tokens:
  - gptc: `gptc bench --backend cuda --json` (decode ms/token, prefill of 1024 tokens);
  - transformers eager generate() with its dynamic cache, and with
    cache_implementation="static" (which compiles the decode step);
  - the card's device-to-device copy bandwidth (bytes read + written), measured
    with torch in the same run, and the fraction of it gptc's decode reaches
    (weight bytes per step / step time / copy bandwidth).
Writes bench/results/gpu-<card>.md and prints it. Needs torch with CUDA and
transformers (both on the GPU machines).
"""
import argparse, json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"gpt2": (12, 768, 12), "gpt2-medium": (24, 1024, 16),
         "gpt2-large": (36, 1280, 20), "gpt2-xl": (48, 1600, 25)}


def gptc_bench(gptc, shape, prompt, new, dtype, extra=()):
    cmd = [gptc, "bench", "--backend", "cuda", "--dtype", dtype, "--shape", shape,
           "--prompt-len", str(prompt), "--new-tokens", str(new), "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return {"error": (r.stderr or r.stdout).strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def copy_bandwidth(torch):
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * n / statistics.median(times) / 1e9


def hf_cases(torch, shape, prompt, new, reps):
    from transformers import GPT2Config, GPT2LMHeadModel
    n_layer, n_embd, n_head = SIZES[shape]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head))
    model = model.to("cuda", torch.float16).eval()
    ids = torch.randint(0, 50257, (1, prompt), device="cuda")
    mask = torch.ones_like(ids)

    def timed(fn):
        fn()
        out = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - t)
        return statistics.median(out)

    def gen(k, **extra):
        return lambda: model.generate(ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k,
                                      do_sample=False, pad_token_id=0, **extra)

    res = {}
    with torch.no_grad():
        # Per-token decode time: (n new tokens - 1 new token) / (n - 1), so
        # prefill and set-up cancel.
        t_n, t_1 = timed(gen(new)), timed(gen(1))
        res["eager_ms"] = 1e3 * (t_n - t_1) / (new - 1)
        try:
            st = {"cache_implementation": "static"}
            t_n, t_1 = timed(gen(new, **st)), timed(gen(1, **st))
            res["static_ms"] = 1e3 * (t_n - t_1) / (new - 1)
        except Exception as e:  # report, don't hide
            res["static_error"] = str(e)[:200]
        long_ids = torch.randint(0, 50257, (1, 1024), device="cuda")
        res["prefill1024_ms"] = 1e3 * timed(lambda: model(long_ids, use_cache=False))
    del model
    torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="gpt2,gpt2-medium,gpt2-large,gpt2-xl")
    ap.add_argument("--gptc", default=os.path.join(ROOT, "build", "gptc"))
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--lessons", default="gpt2", help="shapes for the two-lessons table ('' for none)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args()
    import torch
    card = torch.cuda.get_device_name(0)
    copy = copy_bandwidth(torch)
    print(json.dumps({"card": card, "copy_gb_per_s": copy}), flush=True)
    rows = []
    for shape in args.shapes.split(","):
        g = gptc_bench(args.gptc, shape, args.prompt_len, args.new_tokens, args.dtype)
        p = gptc_bench(args.gptc, shape, 1024, 0, args.dtype)
        h = {} if args.no_hf else hf_cases(torch, shape, args.prompt_len, args.new_tokens, args.reps)
        rec = {"shape": shape, "gptc": g, "gptc_prefill": p, "hf": h}
        print(json.dumps(rec), flush=True)
        rows.append(rec)

    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = [f"# GPU benchmark: {card}", "",
             f"Batch 1, {args.dtype}, greedy, {args.prompt_len}-token prompt, {args.new_tokens} new tokens, "
             f"random weights; transformers (torch {torch.__version__}) on the same card in the same run. "
             f"Device copy bandwidth (read + write): {copy:.0f} GB/s.", "",
             "| shape | gptc ms/token | gptc tokens/s | of copy bandwidth | transformers eager ms/token "
             "| vs eager | transformers static ms/token | vs static | gptc prefill 1024 ms "
             "| transformers prefill 1024 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, h, p = r["gptc"], r["hf"], r["gptc_prefill"]
        ms = g.get("decode_ms_per_token")
        frac = g["weights_gb"] / (ms / 1e3) / copy if ms else None
        eager, static = h.get("eager_ms"), h.get("static_ms")
        lines.append(
            f"| {r['shape']} | {f(ms)} | {f(1e3 / ms if ms else None, '{:.0f}')} "
            f"| {f(100 * frac if frac else None, '{:.0f}%')} | {f(eager)} "
            f"| {f(eager / ms if ms and eager else None, '{:.1f}x')} | {f(static)} "
            f"| {f(static / ms if ms and static else None, '{:.1f}x')} | {f(p.get('prefill_ms'))} "
            f"| {f(h.get('prefill1024_ms'))} |")
        if "error" in g:
            lines.append(f"\ngptc error for {r['shape']}: {g['error']}\n")
    # The two lessons of the ONNX Runtime / TensorRT teams, measured: what a
    # missing K/V cache and logits copied to the host each step cost. Mean
    # ms/token over the whole generation (the cost of --kv-cache off grows
    # with the length).
    lessons = [s for s in args.lessons.split(",") if s]
    if lessons:
        lines += ["", "The two lessons (mean ms/token over the whole generation, 16-token prompt):", "",
                  "| shape | new tokens | default | --host-logits | cost | --kv-cache off | cost |",
                  "|---|---|---|---|---|---|---|"]
    for shape in lessons:
        for new in (256, 1008):
            res = {}
            for mode, extra in (("default", ()), ("host", ("--host-logits",)), ("nokv", ("--kv-cache", "off"))):
                r = gptc_bench(args.gptc, shape, args.prompt_len, new, args.dtype, extra)
                print(json.dumps({"lesson": mode, "shape": shape, "new": new, **r}), flush=True)
                res[mode] = r.get("decode_mean_ms_per_token")
            d, hl, nk = res["default"], res["host"], res["nokv"]
            lines.append(f"| {shape} | {new} | {f(d)} | {f(hl)} | {f(hl / d if d and hl else None, '{:.1f}x')} "
                         f"| {f(nk)} | {f(nk / d if d and nk else None, '{:.1f}x')} |")
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.out, exist_ok=True)
    name = "gpu-" + "".join(c if c.isalnum() else "-" for c in card).strip("-").lower() + ".md"
    with open(os.path.join(args.out, name), "w") as fh:
        fh.write(table)


if __name__ == "__main__":
    sys.exit(main())
