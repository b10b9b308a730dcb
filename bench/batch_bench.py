#!/usr/bin/env python3
"""Batched generation and beam search: gptc against Hugging Face transformers, same machine, one run.

    python3 bench/batch_bench.py [--gptc build/gptc] [--shapes gpt2,gpt2-xl] [--batches 1,8,32,128]
                                 [--prompt 128] [--new 128] [--cpu] [--no-hf]

For each GPT-2 shape (random weights; speed does not depend on values), greedy, eos off (every
sequence runs the full length), N prompts of --prompt tokens and --new new tokens each:
  - gptc: `gptc bench --batch N --json` (the batch engine: all prompts in the first step, then one
    decode step for the whole batch per token), on a GPU from batch 8 also with `--fast-decode`
    (tensor-core products, not bitwise batch-invariant), and `gptc bench --num-beams 4 --json`;
  - transformers: one generate() call with the N prompts as a batch (left padding, which equal
    lengths make a no-op), eager, its dynamic cache, same dtype; and num_beams=4 on one prompt.
Tokens/s = N x new tokens / wall time of the whole generation (prefill included). On a GPU also
the floor of a decode step, reading the weights once plus every sequence's K/V cache (at the mean
context length) at the card's measured copy bandwidth, and the fraction of it gptc's median decode
step reaches. GPU: fp16 weights; --cpu: the CPU backend (fp32) against transformers on the CPU
(fp32). Writes bench/results/batch-<card or cpu>.md and prints it.
"""
import argparse, json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import SIZES, copy_bandwidth  # noqa: E402  (the shapes, and the card's bandwidth the same way)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, CTX = 50257, 1024


def gptc_run(gptc, args, cpu):
    dev = ["--backend", "cpu"] if cpu else ["--backend", "cuda", "--dtype", "f16"]
    r = subprocess.run([gptc, "bench", "--json", *dev, *args], capture_output=True, text=True)
    if r.returncode:
        return {"error": (r.stderr or r.stdout).strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def weight_bytes(shape, elem):
    L, C, _ = SIZES[shape]
    return elem * (VOCAB * C + CTX * C + L * (12 * C * C + 13 * C) + 2 * C)


class HF:
    def __init__(self, torch, shape, cpu):
        from transformers import GPT2Config, GPT2LMHeadModel
        L, C, H = SIZES[shape]
        torch.manual_seed(0)
        self.torch, self.dev = torch, "cpu" if cpu else "cuda"
        dtype = torch.float32 if cpu else torch.float16
        self.model = GPT2LMHeadModel(GPT2Config(n_layer=L, n_embd=C, n_head=H)).to(self.dev, dtype).eval()

    def sync(self):
        if self.dev == "cuda":
            self.torch.cuda.synchronize()

    def generate(self, batch, prompt, new, beams=1):
        t = self.torch
        ids = t.randint(0, VOCAB, (batch, prompt), device=self.dev)
        mask = t.ones_like(ids)
        kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=beams,
                  pad_token_id=0, attention_mask=mask)
        with t.no_grad():
            # Warm-up with the timed call itself: after a 2-token warm-up the
            # first full generate() of gpt2 at batch 1 ran 55.7 ms/token on an
            # H100 and the next 6.8 (lazy initialisation past the first steps).
            self.model.generate(ids, **kw)
            self.sync()
            t0 = time.perf_counter()
            out = self.model.generate(ids, **kw)
            self.sync()
            secs = time.perf_counter() - t0
        assert out.shape[1] == prompt + new
        return batch * new / secs if beams == 1 else new / secs


def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gptc", default=os.path.join(ROOT, "build", "gptc"))
    ap.add_argument("--shapes", default="gpt2,gpt2-xl")
    ap.add_argument("--batches", default=None, help="default 1,8,32,128 (GPU), 1,4,16 (--cpu)")
    ap.add_argument("--prompt", type=int, default=None, help="default 128 (GPU), 32 (--cpu)")
    ap.add_argument("--new", type=int, default=None, help="default 128 (GPU), 16 (--cpu)")
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    batches = [int(x) for x in (a.batches or ("1,4,16" if a.cpu else "1,8,32,128")).split(",")]
    prompt = a.prompt or (32 if a.cpu else 128)
    new = a.new or (16 if a.cpu else 128)
    import torch
    if a.cpu:
        card, bw = "cpu", None
        import platform
        card_desc = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), fp32"
    else:
        card = torch.cuda.get_device_name()
        bw = copy_bandwidth(torch)
        card_desc = f"{card}, fp16, copy bandwidth {bw:.0f} GB/s (read + write)"
    rows = []
    for shape in a.shapes.split(","):
        hf = None if a.no_hf else HF(torch, shape, a.cpu)
        L, C, _ = SIZES[shape]
        elem = 4 if a.cpu else 2
        for n in batches:
            args = ["--shape", shape, "--batch", str(n), "--prompt-len", str(prompt), "--new-tokens", str(new)]
            g = gptc_run(a.gptc, args, a.cpu)
            gf = gptc_run(a.gptc, args + ["--fast-decode"], a.cpu) if not a.cpu and n >= 8 else None
            h = None
            if hf:
                try:
                    h = hf.generate(n, prompt, new)
                except Exception as e:  # e.g. out of memory at a large batch
                    print(f"transformers {shape} batch {n}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            floor_ms = frac = None
            if bw and "decode_ms_per_step" in g:
                kv = n * (prompt + new / 2) * 2 * L * C * elem
                floor_ms = (weight_bytes(shape, elem) + kv) / (bw * 1e9) * 1e3
                frac = floor_ms / g["decode_ms_per_step"]
            rows.append((shape, f"batch {n}", g, h, floor_ms, frac, gf))
            print(shape, n, g, gf, h, file=sys.stderr)
        g = gptc_run(a.gptc, ["--shape", shape, "--num-beams", str(a.beams), "--prompt-len", str(prompt),
                              "--new-tokens", str(new)], a.cpu)
        h = hf.generate(1, prompt, new, beams=a.beams) if hf else None
        rows.append((shape, f"{a.beams} beams", g, h, None, None, None))
        print(shape, "beams", g, h, file=sys.stderr)
        del hf
        if not a.cpu:
            torch.cuda.empty_cache()

    lines = [f"# Batched generation and beam search: gptc vs transformers", "",
             f"{card_desc}; {time.strftime('%Y-%m-%d')}; `python3 bench/batch_bench.py"
             f"{' --cpu' if a.cpu else ''}`.", f"Prompts of {prompt} tokens, {new} new tokens each, greedy, eos off; "
             f"transformers {__import__('transformers').__version__} (torch {torch.__version__}), one generate() "
             "call per batch (eager, dynamic cache).", "",
             "| shape | case | gptc tokens/s | transformers tokens/s | speed-up | gptc prefill ms | "
             "gptc decode ms/step | floor ms/step | of floor | --fast-decode tokens/s | speed-up | "
             "decode ms/step |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape, case, g, h, floor_ms, frac, gf in rows:
        if "error" in g:
            lines.append(f"| {shape} | {case} | error: {g['error'][:80]} | {fmt(h)} | | | | | | | | |")
            continue
        t = g["tokens_per_s"]
        fast = "| - | - | - |"
        if gf and "error" in gf:
            fast = f"| error: {gf['error'][:60]} | | |"
        elif gf:
            tf = gf["tokens_per_s"]
            fast = (f"| {fmt(tf)} | {fmt(tf / h, 1) + 'x' if h else '-'} | "
                    f"{fmt(gf.get('decode_ms_per_step'), 3)} |")
        lines.append(f"| {shape} | {case} | {fmt(t)} | {fmt(h)} | {fmt(t / h, 1) + 'x' if h else '-'} | "
                     f"{fmt(g.get('prefill_ms'), 2)} | {fmt(g.get('decode_ms_per_step'), 3)} | "
                     f"{fmt(floor_ms, 3)} | {fmt(frac * 100, 0) + '%' if frac else '-'} " + fast)
    lines += ["", "Floor: weights read once plus every sequence's K/V cache at the mean context length "
              "(prompt + new/2), at the measured copy bandwidth; of floor = floor / gptc's median decode step.",
              "Beam rows: tokens/s of the one returned sequence. --fast-decode: the decode tokens of a step "
              "share tensor-core products (a sequence's logits then depend on the batch in their last bits; "
              "the default is bitwise what each sequence gets alone)."]
    os.makedirs(a.out, exist_ok=True)
    name = "cpu" if a.cpu else card.lower().replace(" ", "-")
    path = os.path.join(a.out, f"batch-{name}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
