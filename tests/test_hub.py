#!/usr/bin/env python3
"""Hub model ids (-m org/name): the Hugging Face cache and downloads.

A local HTTP server on 127.0.0.1 plays the Hub: {repo}/resolve/{revision}/{file}
with X-Repo-Commit, ETag (git blob sha1) for small files, and for the weights
the Hub's redirect to a CDN (a second server, so another origin) with
X-Linked-Etag (sha256) and X-Linked-Size; the CDN honours Range. Its repos are
made from the fixture folders. The test checks the cache layout
huggingface_hub writes, output identical to the folder itself, cache-only runs
(HF_HUB_OFFLINE=1, and a complete snapshot used without any request), a cache
laid out by hand as transformers leaves it, --revision, resuming a partial
blob, HF_TOKEN (sent to the Hub, not to the CDN), and one-line errors.

stdlib only. Env: GPTC_BIN (the CLI), GPTC_ROOT (the repository).
"""
import hashlib
import http.server
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import threading

BIN = os.environ.get("GPTC_BIN", "gptc")
ROOT = os.environ.get("GPTC_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TOKEN = "hf_test_secret_token"
LFS = (".safetensors", ".bin")
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   " + name)
    else:
        failed += 1
        print("FAIL %s %s" % (name, detail))


def sanitizer_hit(err):
    return any(s in err for s in ("AddressSanitizer", "runtime error", "LeakSanitizer", "Segmentation fault"))


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_of(name):
    return hashlib.sha1(name.encode()).hexdigest()


def repo_from(folder, skip=("expected.json",)):
    files = {}
    for f in sorted(os.listdir(os.path.join(FIXTURES, folder))):
        if f not in skip:
            with open(os.path.join(FIXTURES, folder, f), "rb") as fh:
                files[f] = fh.read()
    return files


def etag_of(name, data):
    return hashlib.sha256(data).hexdigest() if name.endswith(LFS) else git_sha1(data)


class Hub:
    """The two servers and what they saw."""

    def __init__(self):
        self.repos = {}       # id -> {"branches": {rev: commit}, "commits": {commit: files}}
        self.private = set()  # ids that need TOKEN
        self.renamed = {}     # old id -> new id (a relative redirect, as the Hub does)
        self.blobs = {}       # sha256 -> bytes, served by the CDN
        self.log = []         # (server, method, path, headers)
        self.lock = threading.Lock()
        self.fail_500 = False
        self.cut_after = None  # the CDN's next answer stops after this many bytes
        hub, cdn = self.handler("hub"), self.handler("cdn")
        self.hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), hub)
        self.cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), cdn)
        for s in (self.hub, self.cdn):
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.hub.server_address[1]
        self.cdn_url = "http://127.0.0.1:%d" % self.cdn.server_address[1]

    def add(self, repo_id, files, branches=("main",)):
        commit = commit_of(repo_id)
        self.repos[repo_id] = {"branches": {b: commit for b in branches}, "commits": {commit: files}}
        for name, data in files.items():
            if name.endswith(LFS):
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def requests(self):
        with self.lock:
            return len(self.log)

    def close(self):
        for s in (self.hub, self.cdn):
            s.shutdown()
            s.server_close()

    def handler(self, which):
        hub = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.serve(head=True)

            def do_GET(self):
                self.serve(head=False)

            def reply(self, status, headers, body=b"", head=False, cut=None):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

            def serve(self, head):
                with hub.lock:
                    hub.log.append((which, self.command, self.path, dict(self.headers)))
                if which == "cdn":
                    return self.serve_cdn(head)
                if hub.fail_500:
                    return self.reply(500, {}, b"boom", head)
                parts = self.path.split("?")[0].lstrip("/").split("/")
                if "resolve" not in parts:
                    return self.reply(404, {}, b"", head)
                k = parts.index("resolve")
                repo_id, rest = "/".join(parts[:k]), parts[k + 1:]
                if len(rest) != 2:
                    return self.reply(404, {"X-Error-Code": "EntryNotFound"}, b"", head)
                rev, name = [p.replace("%2F", "/") for p in rest]
                if repo_id in hub.renamed:
                    new = "/" + hub.renamed[repo_id] + "/resolve/" + "/".join(rest)
                    return self.reply(307, {"Location": new}, b"", head)
                authed = self.headers.get("Authorization") == "Bearer " + TOKEN
                repo = hub.repos.get(repo_id)
                if repo is None or (repo_id in hub.private and not authed):
                    # The Hub's answer to an anonymous request for a missing or private repo.
                    status = 404 if authed else 401
                    return self.reply(status, {"X-Error-Code": "RepoNotFound",
                                               "X-Error-Message": "Repository not found"}, b"", head)
                commit = repo["branches"].get(rev, rev if rev in repo["commits"] else None)
                if commit is None:
                    return self.reply(404, {"X-Error-Code": "RevisionNotFound",
                                            "X-Error-Message": "Invalid rev id: " + rev}, b"", head)
                files = repo["commits"][commit]
                if name not in files:
                    return self.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit},
                                      b"", head)
                data = files[name]
                if name.endswith(LFS):
                    sha = hashlib.sha256(data).hexdigest()
                    loc = "%s/lfs/%s?X-Signature=abc%%2Bdef" % (hub.cdn_url, sha)
                    return self.reply(302, {"Location": loc, "X-Repo-Commit": commit,
                                            "X-Linked-Etag": '"%s"' % sha, "X-Linked-Size": str(len(data)),
                                            "ETag": '"%s"' % git_sha1(b"pointer " + data[:64])},
                                      b"Found. Redirecting", head)
                return self.reply(200, {"X-Repo-Commit": commit, "ETag": '"%s"' % git_sha1(data)}, data, head)

            def serve_cdn(self, head):
                sha = self.path.split("?")[0].rsplit("/", 1)[-1]
                data = hub.blobs.get(sha)
                if data is None:
                    return self.reply(404, {}, b"", head)
                with hub.lock:
                    cut, hub.cut_after = hub.cut_after, None
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(data):
                        return self.reply(416, {"Content-Range": "bytes */%d" % len(data)}, b"", head)
                    return self.reply(206, {"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data)),
                                            "ETag": '"%s"' % sha}, data[start:], head, cut)
                return self.reply(200, {"ETag": '"%s"' % sha}, data, head, cut)

        return H


def main():
    tmp = tempfile.mkdtemp(prefix="gptc_hub_")
    hub = Hub()
    try:
        cases(hub, tmp)
    finally:
        hub.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def cases(hub, tmp):
    tiny = repo_from("gpt2vocab-f16")
    tiny_commit = hub.add("org/tiny", tiny)
    hub.add("org/private", tiny)
    hub.private.add("org/private")
    hub.renamed["org/old-name"] = "org/tiny"
    sharded = repo_from("sharded-f16-silu")
    sharded_commit = hub.add("org/sharded", sharded)
    hub.add("org/pytorch-only", {"config.json": tiny["config.json"], "pytorch_model.bin": b"\0" * 64})
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    counter = [0]

    def new_cache():
        counter[0] += 1
        return os.path.join(tmp, "cache%d" % counter[0])

    def env_for(cache, **extra):
        env = {k: v for k, v in os.environ.items() if not (k.startswith("HF_") or k.startswith("HUGGING")
                                                          or k == "TRANSFORMERS_OFFLINE")}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_CACHE=cache, HF_HOME=home)
        env.update(extra)
        return env

    def run(args, cache, stdin=b"", **extra):
        return subprocess.run([BIN] + args, input=stdin, capture_output=True, timeout=120,
                              env=env_for(cache, **extra))

    gen_text = ["generate", "--prompt", "Hello, my name is", "--max-new-tokens", "12", "--greedy",
                "--threads", "1"]
    gen_ids = ["generate", "--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--greedy", "--threads", "1",
               "--ids"]

    def gen(model, cache, *extra_args, **env):
        return run(gen_text[:1] + ["-m", model] + list(extra_args) + gen_text[1:], cache, **env)

    def expect_fail(name, r, *needles, status=None):
        err = r.stderr.decode(errors="replace")
        problems = []
        if r.returncode <= 0:
            problems.append("exit status %d" % r.returncode)
        if status is not None and r.returncode != status:
            problems.append("exit status %d, want %d" % (r.returncode, status))
        if sanitizer_hit(err):
            problems.append("sanitizer report")
        if len(err.splitlines()) != 1:
            problems.append("stderr has %d lines, want 1" % len(err.splitlines()))
        problems += ["stderr lacks %r" % n for n in needles if n not in err]
        check(name, not problems, "; ".join(problems) + " | " + err.strip()[:400])

    def clean_ok(r):
        err = r.stderr.decode(errors="replace")
        return r.returncode == 0 and not err and not sanitizer_hit(err)

    folder = os.path.join(FIXTURES, "gpt2vocab-f16")
    want = run(gen_text[:1] + ["-m", folder] + gen_text[1:], new_cache())
    check("reference: the fixture folder itself", clean_ok(want) and want.stdout, want.stderr)

    # ---- a first download ----
    cache = new_cache()
    n0 = hub.requests()
    r = gen("org/tiny", cache)
    check("download org/tiny: same text as the folder", clean_ok(r) and r.stdout == want.stdout,
          (r.stdout[:200], r.stderr[:400]))
    seen = hub.log[n0:]
    check("download: the weights came through the CDN redirect",
          any(s == "cdn" and m == "GET" for s, m, _, _ in seen) and
          any(s == "hub" and m == "HEAD" and p.endswith("/model.safetensors") for s, m, p, _ in seen))
    check("download: no request carried a token (none set)", not any("Authorization" in h for *_, h in seen))
    check("download: every file after config.json asked at the commit",
          all(("/resolve/%s/" % tiny_commit) in p for s, m, p, _ in seen
              if s == "hub" and not p.endswith("/config.json")), [p for _, _, p, _ in seen])

    repo = os.path.join(cache, "models--org--tiny")
    ref = os.path.join(repo, "refs", "main")
    check("cache: refs/main holds the commit", os.path.isfile(ref) and open(ref).read() == tiny_commit)
    snap = os.path.join(repo, "snapshots", tiny_commit)
    expect_files = {"config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt"}
    got = set(os.listdir(snap)) if os.path.isdir(snap) else set()
    check("cache: the snapshot has the files gptc reads", got == expect_files, sorted(got))
    links_ok = True
    for f in expect_files & got:
        p = os.path.join(snap, f)
        target = os.readlink(p) if os.path.islink(p) else None
        good = target == "../../blobs/" + etag_of(f, tiny[f])
        good = good and open(p, "rb").read() == tiny[f]
        if not good:
            links_ok = False
            print("     %s -> %s" % (f, target))
    check("cache: snapshots/<commit>/<file> -> ../../blobs/<etag> (sha256 for LFS, git sha1 else)", links_ok)
    blobs = sorted(os.listdir(os.path.join(repo, "blobs")))
    check("cache: blobs complete, no .incomplete left",
          blobs == sorted(etag_of(f, tiny[f]) for f in expect_files), blobs)
    check("cache: the lock folder of huggingface_hub",
          os.path.isdir(os.path.join(cache, ".locks", "models--org--tiny")))

    # ---- from the cache ----
    n0 = hub.requests()
    r = gen("org/tiny", cache, HF_HUB_OFFLINE="1")
    check("HF_HUB_OFFLINE=1 with the model cached: same text, no request",
          clean_ok(r) and r.stdout == want.stdout and hub.requests() == n0, (r.stderr, hub.requests() - n0))
    r = gen("org/tiny", cache)
    check("online with a complete snapshot: no request either",
          clean_ok(r) and r.stdout == want.stdout and hub.requests() == n0, (r.stderr, hub.requests() - n0))
    text = "Hello world, the Hub's cache.".encode()
    r = run(["tokenize", "-m", "org/tiny"], cache, stdin=text, HF_HUB_OFFLINE="1")
    r2 = run(["tokenize", "-m", folder], cache, stdin=text)
    check("tokenize -m org/tiny from the cache", clean_ok(r) and r.stdout == r2.stdout and r.stdout.strip())
    r = run(["perplexity", "-m", "org/tiny", "--file", os.path.join(FIXTURES, "ppl.txt"), "--threads", "1"],
            cache, HF_HUB_OFFLINE="1")
    r2 = run(["perplexity", "-m", folder, "--file", os.path.join(FIXTURES, "ppl.txt"), "--threads", "1"], cache)
    last = lambda out: out.decode().strip().splitlines()[-1] if out.strip() else ""
    check("perplexity -m org/tiny from the cache", clean_ok(r) and last(r.stdout) == last(r2.stdout) and
          last(r.stdout).startswith("perplexity:"), (r.stdout, r.stderr))

    empty = new_cache()
    r = gen("org/tiny", empty, HF_HUB_OFFLINE="1")
    expect_fail("HF_HUB_OFFLINE=1, empty cache: says what and where", r, "HF_HUB_OFFLINE", "org/tiny",
                os.path.join(empty, "models--org--tiny"), status=1)
    check("HF_HUB_OFFLINE=1 made no request", hub.requests() == n0)
    r = gen("org/tiny", empty, TRANSFORMERS_OFFLINE="1")
    expect_fail("TRANSFORMERS_OFFLINE=1 counts too", r, "org/tiny")
    check("TRANSFORMERS_OFFLINE=1 made no request", hub.requests() == n0)

    partial = new_cache()
    shutil.copytree(cache, partial, symlinks=True)
    psnap = os.path.join(partial, "models--org--tiny", "snapshots", tiny_commit)
    os.remove(os.path.join(psnap, "model.safetensors"))
    r = gen("org/tiny", partial, HF_HUB_OFFLINE="1")
    expect_fail("HF_HUB_OFFLINE=1, snapshot without its weights: names the file and the snapshot", r,
                "model.safetensors", psnap)
    n0 = hub.requests()
    r = gen("org/tiny", partial)
    check("online, snapshot without its weights: only the weights are fetched",
          clean_ok(r) and r.stdout == want.stdout and
          sorted(p.rsplit("/", 1)[-1].split("?")[0] for s, m, p, _ in hub.log[n0:] if s == "hub") ==
          ["config.json", "model.safetensors"], [(s, m, p) for s, m, p, _ in hub.log[n0:]])

    # ---- a cache laid out by hand, as transformers leaves it ----
    hand = new_cache()
    commit = "0123456789abcdef0123456789abcdef01234567"
    hrepo = os.path.join(hand, "models--someone--handmade")
    os.makedirs(os.path.join(hrepo, "blobs"))
    os.makedirs(os.path.join(hrepo, "refs"))
    os.makedirs(os.path.join(hrepo, "snapshots", commit))
    extra = {"tokenizer_config.json": b'{"model_max_length": 1024}', "special_tokens_map.json": b"{}"}
    for f, data in list(tiny.items()) + list(extra.items()):
        e = etag_of(f, data)
        with open(os.path.join(hrepo, "blobs", e), "wb") as fh:
            fh.write(data)
        os.symlink("../../blobs/" + e, os.path.join(hrepo, "snapshots", commit, f))
    with open(os.path.join(hrepo, "refs", "main"), "w") as fh:
        fh.write(commit)
    n0 = hub.requests()
    r = gen("someone/handmade", hand)
    check("a transformers-style cache is used as it is, without a request",
          clean_ok(r) and r.stdout == want.stdout and hub.requests() == n0, (r.stderr, hub.requests() - n0))
    r = gen("someone/handmade", hand, "--revision", commit)
    check("--revision <commit> goes straight to snapshots/<commit>",
          clean_ok(r) and r.stdout == want.stdout and hub.requests() == n0, r.stderr)
    r = gen("someone/handmade", hand, "--revision", "v2", HF_HUB_OFFLINE="1")
    expect_fail("HF_HUB_OFFLINE=1, --revision not in refs/", r, "revision 'v2'",
                os.path.join(hrepo, "refs", "v2"))

    # ---- --revision ----
    rev_cache = new_cache()
    r = gen("org/tiny", rev_cache, "--revision", tiny_commit)
    rrepo = os.path.join(rev_cache, "models--org--tiny")
    check("--revision <commit>: downloads that commit", clean_ok(r) and r.stdout == want.stdout and
          os.path.isdir(os.path.join(rrepo, "snapshots", tiny_commit)), r.stderr)
    check("--revision <commit>: no refs/ entry for a commit hash",
          not os.path.exists(os.path.join(rrepo, "refs")) or not os.listdir(os.path.join(rrepo, "refs")))
    r = gen("org/tiny", rev_cache, "--revision", tiny_commit, HF_HUB_OFFLINE="1")
    check("--revision <commit> then offline", clean_ok(r) and r.stdout == want.stdout, r.stderr)
    r = gen("org/tiny", new_cache(), "--revision", "no-such-branch")
    expect_fail("--revision that does not exist (404)", r, "revision 'no-such-branch'", "not found", status=1)
    r = gen("org/tiny", new_cache(), "--revision", "../../etc")
    expect_fail("--revision with '..'", r, "revision '../../etc'", status=2)

    # ---- resume ----
    res = new_cache()
    weights = tiny["model.safetensors"]
    sha = hashlib.sha256(weights).hexdigest()
    os.makedirs(os.path.join(res, "models--org--tiny", "blobs"))
    cut = len(weights) // 3
    with open(os.path.join(res, "models--org--tiny", "blobs", sha + ".incomplete"), "wb") as fh:
        fh.write(weights[:cut])
    n0 = hub.requests()
    r = gen("org/tiny", res)
    ranges = [h.get("Range") for s, m, p, h in hub.log[n0:] if s == "cdn"]
    check("a partial blob is resumed with a Range request", clean_ok(r) and r.stdout == want.stdout and
          ranges == ["bytes=%d-" % cut], (ranges, r.stderr))
    blob = os.path.join(res, "models--org--tiny", "blobs", sha)
    check("the resumed blob is whole and renamed", os.path.isfile(blob) and open(blob, "rb").read() == weights
          and not os.path.exists(blob + ".incomplete"))

    cutc = new_cache()
    hub.cut_after = 300000
    r = gen("org/tiny", cutc)
    part = os.path.join(cutc, "models--org--tiny", "blobs", sha + ".incomplete")
    expect_fail("a download cut short: one line naming the file", r, "org/tiny", "model.safetensors", status=1)
    check("a download cut short keeps the partial blob", os.path.isfile(part) and
          os.path.getsize(part) == 300000 and open(part, "rb").read() == weights[:300000])
    n0 = hub.requests()
    r = gen("org/tiny", cutc)
    ranges = [h.get("Range") for s, m, p, h in hub.log[n0:] if s == "cdn"]
    check("... and the next run resumes it", clean_ok(r) and r.stdout == want.stdout and
          ranges == ["bytes=300000-"] and open(blob.replace(res, cutc), "rb").read() == weights, (ranges, r.stderr))

    # ---- tokens ----
    r = gen("org/private", new_cache())
    expect_fail("private or gated model without a token (401): says to set HF_TOKEN", r, "HF_TOKEN",
                "org/private", "401", status=1)
    pc = new_cache()
    n0 = hub.requests()
    r = gen("org/private", pc, HF_TOKEN=TOKEN)
    seen = hub.log[n0:]
    check("HF_TOKEN: the private model downloads", clean_ok(r) and r.stdout == want.stdout, r.stderr)
    check("HF_TOKEN: sent as a bearer token to every Hub request",
          all(h.get("Authorization") == "Bearer " + TOKEN for s, _, _, h in seen if s == "hub") and
          any(s == "hub" for s, *_ in seen))
    check("HF_TOKEN: not sent to the CDN (another origin)",
          any(s == "cdn" for s, *_ in seen) and not any("Authorization" in h for s, _, _, h in seen if s == "cdn"))
    with open(os.path.join(home, "token"), "w") as fh:
        fh.write(TOKEN + "\n")
    r = gen("org/private", new_cache())
    check("the token file of huggingface-cli login ($HF_HOME/token) is used", clean_ok(r) and
          r.stdout == want.stdout, r.stderr)
    os.remove(os.path.join(home, "token"))
    r = gen("org/private", new_cache(), HF_TOKEN="wrong")
    expect_fail("a token that cannot read the model", r, "HF_TOKEN", "org/private")

    # ---- errors ----
    r = gen("org/nothing-here", new_cache(), HF_TOKEN=TOKEN)
    expect_fail("no such model (404)", r, "org/nothing-here", "404", status=1)
    r = gen("nothing-here", new_cache())
    expect_fail("no such model, anonymous (401 like the Hub)", r, "nothing-here", "not a local folder", status=1)
    r = gen("org/pytorch-only", new_cache())
    expect_fail("a repo without safetensors weights", r, "org/pytorch-only", "safetensors")
    for bad in ("org/na--me", "org/name/extra-", "-org/name", "org/name.", "a b", "x" * 97, "org/ab.git"):
        r = gen(bad, new_cache())
        expect_fail("bad repo id %r" % bad[:20], r, bad if len(bad) < 60 else "model", status=2)
    r = gen("org/tiny", new_cache(), HF_ENDPOINT="http://127.0.0.1:1")
    expect_fail("the endpoint cannot be reached", r, "org/tiny", "cannot be reached", status=1)
    hub.fail_500 = True
    r = gen("org/tiny", new_cache())
    hub.fail_500 = False
    expect_fail("the Hub answers 500", r, "HTTP 500", status=1)
    r = gen(os.path.join(tmp, "no", "such", "folder"), new_cache())
    expect_fail("a path that does not exist stays a path error", r, "model folder does not exist")

    # ---- a progress bar on a terminal; two processes downloading at once ----
    master, slave = pty.openpty()
    p = subprocess.Popen([BIN] + gen_text[:1] + ["-m", "org/tiny"] + gen_text[1:], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=env_for(new_cache()))
    os.close(slave)
    bar = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        bar += chunk
    os.close(master)
    out = p.stdout.read()
    p.stdout.close()
    p.wait()
    check("stderr a terminal: a progress bar for the weights, ending in 100% and a newline",
          p.returncode == 0 and out == want.stdout and b"model.safetensors" in bar and b"100%" in bar and
          bar.endswith(b"\n"), bar[-300:])
    r = gen("org/tiny", new_cache(), HF_HUB_DISABLE_PROGRESS_BARS="1")
    check("not a terminal: nothing on stderr", clean_ok(r) and r.stdout == want.stdout, r.stderr)

    both = new_cache()
    n0 = hub.requests()
    procs = [subprocess.Popen([BIN] + gen_text[:1] + ["-m", "org/tiny"] + gen_text[1:], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env_for(both)) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    gets = [p for s, m, p, _ in hub.log[n0:] if s == "cdn" and m == "GET"]
    blobs = os.listdir(os.path.join(both, "models--org--tiny", "blobs"))
    check("three processes at once: all succeed, the weights are downloaded once (the blob lock)",
          all(p.returncode == 0 and o == want.stdout and not e for p, (o, e) in zip(procs, outs)) and
          len(gets) == 1 and not any(b.endswith(".incomplete") for b in blobs), (gets, [e for _, e in outs]))

    # ---- a sharded checkpoint, a repo without tokenizer, a renamed repo ----
    sc = new_cache()
    want_ids = run(gen_ids[:1] + ["-m", os.path.join(FIXTURES, "sharded-f16-silu")] + gen_ids[1:], sc)
    r = run(gen_ids[:1] + ["-m", "org/sharded"] + gen_ids[1:], sc)
    shards = sorted(f for f in sharded if f.startswith("model-"))
    ssnap = os.path.join(sc, "models--org--sharded", "snapshots", sharded_commit)
    check("sharded: index and every shard downloaded, same ids",
          clean_ok(r) and r.stdout == want_ids.stdout and want_ids.stdout.strip() and
          all(os.path.islink(os.path.join(ssnap, f)) for f in shards + ["model.safetensors.index.json"]),
          (r.stdout, r.stderr))
    no_exist = os.path.join(sc, "models--org--sharded", ".no_exist", sharded_commit)
    check("files the repo lacks are recorded in .no_exist/<commit>/",
          os.path.isdir(no_exist) and {"vocab.json", "tokenizer.json", "model.safetensors"} <=
          set(os.listdir(no_exist)), os.listdir(no_exist) if os.path.isdir(no_exist) else None)
    n0 = hub.requests()
    r = run(gen_ids[:1] + ["-m", "org/sharded"] + gen_ids[1:], sc, HF_HUB_OFFLINE="1")
    check("sharded, no tokenizer in the repo: complete offline", clean_ok(r) and r.stdout == want_ids.stdout and
          hub.requests() == n0, r.stderr)
    rn = new_cache()
    r = gen("org/old-name", rn)
    check("a renamed repo (relative redirect) downloads", clean_ok(r) and r.stdout == want.stdout, r.stderr)


if __name__ == "__main__":
    sys.exit(main())
