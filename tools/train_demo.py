#!/usr/bin/env python3
"""Trains the bundled demo model: a small GPT-2 on tinyshakespeare.txt.

The README's first command generates text with no download, so the repo
carries a checkpoint small enough to commit (<= 16 MB in F16). With the real
GPT-2 tokenizer the embedding matrix (50257 x n_embd) dominates the size, so
the model is narrow (n_embd 128) and a few layers deep: about 7.7 M
parameters, 15.3 MB in F16.

Data: the text is tokenized whole with the GPT-2 tokenizer; the first 90 % of
the tokens train, the last 10 % validate (a contiguous split, so no passage is
in both). Training: AdamW, linear warm-up then cosine decay, random
512-token windows, seed fixed; the validation loss over every full window of
the held-out part is measured every --eval-every steps and the best
checkpoint is kept (the data is small: later steps overfit). The run's
numbers go into the model card and training_log.json beside the weights.

Needs torch and transformers (the GPU machine has both; a CPU works, slowly):
    python3 tools/train_demo.py --text ../shared/data/tinyshakespeare.txt \
        --tokenizer ../shared/data/gpt2-tokenizer --out models/shakespeare-demo
"""
import argparse
import json
import math
import os
import shutil
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokenizer", required=True, help="folder with vocab.json and merges.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--block", type=int, default=512, help="training window = n_positions")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok = GPT2TokenizerFast(os.path.join(args.tokenizer, "vocab.json"),
                            os.path.join(args.tokenizer, "merges.txt"))
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    ids = torch.tensor(tok(text)["input_ids"], dtype=torch.long)
    n_train = int(0.9 * len(ids))
    train, val = ids[:n_train], ids[n_train:]
    print(f"{len(text)} characters, {len(ids)} tokens: {len(train)} train, {len(val)} validation")

    cfg = GPT2Config(vocab_size=len(tok), n_positions=args.block, n_embd=args.n_embd,
                     n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=args.dropout,
                     embd_pdrop=args.dropout, attn_pdrop=args.dropout,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.1 * args.lr + 0.9 * args.lr * 0.5 * (1 + math.cos(math.pi * p))

    gen = torch.Generator().manual_seed(args.seed)

    def batch():
        starts = torch.randint(0, len(train) - args.block, (args.batch,), generator=gen)
        return torch.stack([train[s:s + args.block] for s in starts]).to(dev)

    @torch.no_grad()
    def val_loss():
        model.eval()
        n = (len(val) - 1) // args.block
        x = torch.stack([val[i * args.block:(i + 1) * args.block] for i in range(n)])
        tot, cnt = 0.0, 0
        for i in range(0, n, 16):
            xb = x[i:i + 16].to(dev)
            out = model(xb, labels=xb)
            k = xb.numel() - xb.shape[0]  # predicted positions
            tot += out.loss.item() * k
            cnt += k
        model.train()
        return tot / cnt

    log, best, best_step = [], float("inf"), -1
    best_state = None
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        xb = batch()
        loss = model(xb, labels=xb).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            vl = val_loss()
            log.append({"step": step + 1, "train_loss": round(loss.item(), 4),
                        "val_loss": round(vl, 4), "val_ppl": round(math.exp(vl), 2)})
            print(json.dumps(log[-1]), flush=True)
            if vl < best:
                best, best_step = vl, step + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    secs = time.time() - t0

    model.load_state_dict(best_state)
    model = model.half().eval()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    gc_path = os.path.join(args.out, "generation_config.json")
    with open(gc_path) as f:
        gc = json.load(f)
    # A model this small loops under greedy search; sampling reads better.
    gc.update({"do_sample": True, "temperature": 0.8, "top_k": 40})
    with open(gc_path, "w") as f:
        json.dump(gc, f, indent=2)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
    summary = {"parameters": n_params, "train_tokens": len(train), "val_tokens": len(val),
               "best_step": best_step, "best_val_loss": round(best, 4),
               "best_val_ppl": round(math.exp(best), 2), "seconds": round(secs, 1),
               "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
               "torch": torch.__version__, "args": vars(args), "log": log}
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(summary, f, indent=1)
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"best step {best_step}: validation loss {best:.4f} (perplexity {math.exp(best):.2f}); "
          f"model.safetensors {size} bytes; {secs:.0f} s on {summary['device']}")


if __name__ == "__main__":
    main()
