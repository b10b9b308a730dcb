#!/usr/bin/env python3
"""On a GPU machine with two or more GPUs (carrying gpu-pkg/ from
scripts/gpu_package.sh; run after `. scripts/gpu_env.sh`): `--device N`
and `gptc serve --devices 0,1` really use each GPU, and give the same ids
everywhere; the Python package on a GPU (device=1), and its errors.

    . scripts/gpu_env.sh && python3 tests/gpu/devices_check.py
"""
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
ROOT = os.environ.get("GPTC_ROOT", os.getcwd())
sys.path.insert(0, os.path.join(ROOT, "tests"))
from serve_client import COUNTS, KEY, check, complete, metrics  # noqa: E402

BIN = os.environ.get("GPTC_BIN", os.path.join(ROOT, "gpu-pkg", "gptc"))
DEMO = os.path.join(ROOT, "models", "shakespeare-demo")
FIX = os.path.join(ROOT, "tests", "fixtures", "gpt2vocab-f16")


def cli_ids(model, device, prompt, n):
    r = subprocess.run([BIN, "generate", "-m", model, "--backend", "cuda", "--device", str(device), "--prompt",
                        prompt, "--max-new-tokens", str(n), "--greedy", "--ids"], capture_output=True, timeout=300)
    return r.stdout.decode().split() if r.returncode == 0 else ("error", r.stderr.decode())


def gpu_mem():
    r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                       capture_output=True, timeout=60)
    return [int(x) for x in r.stdout.decode().split()]


def main():
    n_gpu = len(gpu_mem())
    print("GPUs:", n_gpu)
    if n_gpu < 2:
        print("needs two GPUs")
        return 1
    ids = [cli_ids(DEMO, d, "ROMEO:", 40) for d in (0, 1)]
    check("--device 0 and --device 1: the same greedy ids", ids[0] == ids[1] and ids[0][0] != "error", ids)

    before = gpu_mem()
    p = subprocess.Popen([BIN, "serve", "-m", DEMO, "--backend", "cuda", "--devices", "0,1", "--max-batch", "1",
                          "--port", "0", "--api-key", KEY], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    port, lines = None, []
    for raw in p.stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        if "listening on" in line:
            port = int(line.split(":")[-1].split("/")[0])
        if "ready:" in line or "error" in line.lower():
            break
    threading.Thread(target=lambda: [lines.append(r.decode()) for r in p.stderr], daemon=True).start()
    check("serve --devices 0,1: ready on both", port and any("devices 0,1" in x for x in lines), lines)
    during = gpu_mem()
    check("serve --devices 0,1: the model is on each GPU (memory used grew on both)",
          all(d > b + 100 for b, d in zip(before[:2], during[:2])), (before, during))
    req = {"prompt": "ROMEO:", "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    out, running = [None, None], []

    def one(i):
        out[i] = complete(port, req)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    t0 = time.time()
    while any(t.is_alive() for t in ts) and time.time() - t0 < 60:
        running.append(metrics(port).get("gptc_running_batch_size", 0))
        time.sleep(0.002)
    for t in ts:
        t.join(120)
    texts = [o[1]["choices"][0]["text"] if o and o[0] == 200 else o for o in out]
    check("two requests at once, one per GPU (running batch 2 seen, max batch 1 each)", max(running or [0]) == 2,
          running[:50])
    check("the two GPUs give the same text", texts[0] == texts[1] and isinstance(texts[0], str), texts)
    p.terminate()
    check("SIGTERM: exits 0", p.wait(120) == 0, lines[-3:])

    os.environ.setdefault("GPTC_LIBRARY", os.path.join(ROOT, "gpu-pkg", "lib", "libgptc.so"))
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import gptc
    m = gptc.Model(FIX, backend="cuda", device=1)
    got = m.generate([15496, 11, 616, 1438, 318], max_new_tokens=12, do_sample=False, return_ids=True)
    want = subprocess.run([BIN, "generate", "-m", FIX, "--backend", "cuda", "--device", "1", "--prompt-ids",
                           "15496,11,616,1438,318", "--max-new-tokens", "12", "--greedy", "--ids"],
                          capture_output=True, timeout=120).stdout.decode().split()
    check("Python: gptc.Model(backend='cuda', device=1).generate = the CLI's ids",
          [str(x) for x in got] == want, (got, want))
    m.close()
    try:
        gptc.Model(FIX, backend="cuda", device=n_gpu)
        check("Python: a device the machine lacks raises", False, "no error")
    except gptc.ArgumentError as e:
        check("Python: a device the machine lacks raises ArgumentError naming it", "device" in str(e), e)
    print("%d passed, %d failed" % (COUNTS.passed, COUNTS.failed))
    return 1 if COUNTS.failed else 0


if __name__ == "__main__":
    sys.exit(main())
