#!/usr/bin/env python3
"""Load benchmark of `gptc serve`: streaming completions at several concurrency levels.

    python3 bench/serve_bench.py [-m MODEL] [--backend cpu|cuda] [--levels 1,8,32,64]
                                 [--requests 2] [--prompt-len 16] [--max-tokens 128]
                                 [--url http://host:port] [--out bench/results/serve-cpu.md]

Starts `gptc serve` on a free loopback port (or uses --url), then for each
concurrency level C keeps C streams in flight, each client sending its next
request as soon as the last one ended, until C x --requests requests are done.
Every request is greedy (or --temperature T [--top-p P], seeded) with ignore_eos, so each generates exactly
--max-tokens tokens, over a prompt of --prompt-len tokens (different per
request, so nothing is shared). Per level: requests/s, generated tokens/s
(aggregate), p50/p99 time to first token, p50/p99 request latency, and the
mean inter-token latency each stream sees. Prints a Markdown table and, with
--out, writes it.

The client is Python threads over http.client, spread over --client-procs
processes: at tens of thousands of chunks per second (a GPU at high
concurrency) it can still be the bottleneck; its CPU use (in cores: 100% is
one core busy) is printed so that one can tell.
Needs: build/gptc (or --gptc).
"""
import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def start_server(args):
    cmd = [args.gptc, "serve", "--port", "0", "--max-batch", str(max(args.levels)),
           "--max-queue", str(4 * max(args.levels))]
    if args.model:
        cmd += ["-m", args.model]
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += args.server_arg
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    for line in p.stderr:
        sys.stderr.write(line)
        m = re.search(r"listening on http://\S+:(\d+)/v1", line)
        if m:
            port = int(m.group(1))
        if "ready:" in line:
            break
    if port is None or p.poll() is not None:
        sys.exit("gptc serve did not start")
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, "127.0.0.1", port


def one_request(host, port, body):
    """(time to first token, latency, tokens, [inter-token gaps]) of one stream."""
    c = http.client.HTTPConnection(host, port, timeout=3600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError("HTTP %d: %s" % (r.status, r.read()[:300]))
    first, last, gaps, tokens = None, None, [], 0
    while True:
        line = r.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        if line.startswith(b"data: [DONE]"):
            break
        ev = json.loads(line[6:])
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
        if ev.get("choices"):
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
    c.close()
    return first - t0, time.perf_counter() - t0, tokens, gaps


def client_process(host, port, args, model, n_threads, counter, n_total, q):
    """n_threads clients in one process, taking request numbers from the shared counter."""
    results, lock = [], threading.Lock()

    def worker():
        while True:
            with counter.get_lock():
                i = counter.value
                if i >= n_total:
                    return
                counter.value += 1
            # a different prompt per request: ids that spell no cached prefix
            prompt = [(1000 + 37 * i + 11 * k) % 50000 for k in range(args.prompt_len)]
            body = {"model": model, "prompt": prompt, "max_tokens": args.max_tokens,
                    "temperature": args.temperature, "top_p": args.top_p, "seed": i,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            res = one_request(host, port, body)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put(results)


def run_level(host, port, args, c, model):
    """C streams in flight, spread over processes (Python threads of one process share one core's
    worth of interpreter, which thousands of chunks a second would saturate)."""
    n_total = c * args.requests
    n_proc = max(1, min(c, args.client_procs))
    counter, q = mp.Value("i", 0), mp.Queue()
    t_cpu0 = os.times()
    t0 = time.perf_counter()
    procs = [mp.Process(target=client_process,
                        args=(host, port, args, model, c // n_proc + (k < c % n_proc), counter, n_total, q))
             for k in range(n_proc)]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        results += q.get()
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    t_cpu1 = os.times()
    cpu = (t_cpu1.children_user - t_cpu0.children_user) + (t_cpu1.children_system - t_cpu0.children_system)
    tokens = sum(r[2] for r in results)
    ttft = [r[0] for r in results]
    lat = [r[1] for r in results]
    gaps = [g for r in results for g in r[3]]
    return {"concurrency": c, "requests": len(results), "wall_s": wall, "req_s": len(results) / wall,
            "tok_s": tokens / wall, "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "lat_p50": pct(lat, 50), "lat_p99": pct(lat, 99),
            "itl_ms": 1e3 * statistics.mean(gaps) if gaps else float("nan"),
            "client_cpu": cpu / wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", help="model (default: the demo model)")
    ap.add_argument("--backend")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--url", help="a running server instead of starting one")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more argument for gptc serve (repeatable), e.g. --server-arg=--fast-decode")
    ap.add_argument("--client-procs", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                    help="client processes (default: half the cores)")
    ap.add_argument("--gptc", default=os.path.join(ROOT, "build", "gptc"))
    ap.add_argument("--out")
    args = ap.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]
    proc = None
    if args.url:
        u = urllib.parse.urlparse(args.url)
        host, port = u.hostname, u.port or 80
    else:
        proc, host, port = start_server(args)
    try:
        c = http.client.HTTPConnection(host, port, timeout=60)
        c.request("GET", "/v1/models")
        model = json.loads(c.getresponse().read())["data"][0]["id"]
        c.close()
        one_request(host, port, {"prompt": [1, 2, 3], "max_tokens": 4, "stream": True, "temperature": 0})  # warm-up
        rows = [run_level(host, port, args, lv, model) for lv in args.levels]
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    head = ("`gptc serve %s`, model %s, %s; prompt %d tokens, %d generated per request (%s, ignore_eos), "
            "streaming; client: Python threads in %d processes on the same machine (%s)." %
            (" ".join(args.server_arg), model, args.backend or "default backend", args.prompt_len, args.max_tokens,
             "greedy" if args.temperature == 0 else "temperature %g, top_p %g, seeded" % (args.temperature, args.top_p), args.client_procs,
             platform.node()))
    lines = [head, "",
             "| concurrency | requests | requests/s | tokens/s | TTFT p50 ms | TTFT p99 ms | latency p50 s | "
             "latency p99 s | inter-token ms | client CPU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %d | %d | %.2f | %.0f | %.1f | %.1f | %.2f | %.2f | %.2f | %.0f%% |" % (
            r["concurrency"], r["requests"], r["req_s"], r["tok_s"], 1e3 * r["ttft_p50"], 1e3 * r["ttft_p99"],
            r["lat_p50"], r["lat_p99"], r["itl_ms"], 100 * r["client_cpu"]))
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
