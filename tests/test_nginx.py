#!/usr/bin/env python3
"""Two `gptc serve` behind nginx with the shipped deploy/nginx/gptc.conf, on loopback.

The config is the shipped file itself: the test only points its three ports
(the listener and the two upstream servers) at the ones it picked, and runs
nginx with the temp directory as its prefix (-p), which every path in the
file is relative to. A config change that breaks streaming, balancing,
failover, the API key or the body limit fails here.

Through nginx: a greedy completion equals the same request made to a server
directly; a stream arrives token by token (not buffered to the end); requests
spread over both servers (their /metrics counters); /health, /v1/models,
/metrics; the API key (401 without, 200 with); the body limit agrees with
gptc's --max-body; a client that leaves mid-stream has its request cancelled;
with one server stopped (SIGTERM, exit 0) requests still succeed; with both
stopped nginx answers 502 with an OpenAI error object.

nginx must be installed (scripts/install-deps.sh --test installs it): its
absence is a failure, unless GPTC_NO_NGINX=1 says to skip.

Self-contained (stdlib only): test_serve.py's helpers pull in numpy through
test_cli and test_bad_input.

Env: GPTC_BIN (the CLI), GPTC_ROOT, GPTC_SANITIZE=1 in the sanitizer build,
GPTC_NO_NGINX=1 to skip, NGINX (the nginx binary, else PATH or /usr/sbin).
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
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_client import COUNTS, KEY, check, complete, metrics, request, sanitizer_hit  # noqa: E402

BIN = os.environ.get("GPTC_BIN", "gptc")
ROOT = os.environ.get("GPTC_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MODEL = os.path.join(ROOT, "tests", "fixtures", "gpt2vocab-f16")
CONF = os.path.join(ROOT, "deploy", "nginx", "gptc.conf")
NAME = "fixture-model"
SAN = os.environ.get("GPTC_SANITIZE") == "1"
# Startup and shutdown are slower under the sanitizers.
SLOW = 120 if SAN else 30
P1 = "Hello, my name is"
MAX_BODY = 1 << 20  # gptc's --max-body default, and the config's client_max_body_size
# The fixture's n_positions is 128: P1 (5 tokens) + this many fills most of it,
# long enough for a stream to be visibly token by token.
LONG = 110

def is_error_object(data):
    try:
        e = json.loads(data)["error"]
        return isinstance(e["message"], str) and "type" in e and "code" in e
    except (ValueError, KeyError, TypeError):
        return False


COMPLETIONS_OK = 'gptc_requests_total{endpoint="/v1/completions",status="200"}'


class Server:
    """`gptc serve` on a free port (--port 0: the port from its first line)."""

    def __init__(self, *args):
        cmd = [BIN, "serve", "-m", MODEL, "--served-model-name", NAME, "--backend", "cpu", "--port", "0",
               "--threads", "1", *args]
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines, self.port, self.rc = [], None, "running"
        self.got_port = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.p.stderr:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            m = re.search(r"listening on http://\S+:(\d+)/v1", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self.got_port.set()
        self.got_port.set()

    def wait_ready(self):
        self.got_port.wait(SLOW)
        if self.port is None:
            raise RuntimeError("gptc serve did not start: %s" % self.stderr())
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline:
            try:
                if request(self.port, "GET", "/health", key=None)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("gptc serve never became healthy: %s" % self.stderr())

    def stderr(self):
        return "".join(self.lines)

    def stop(self, name):
        """SIGTERM, and the check that it exits 0 with no sanitizer report (once)."""
        if self.rc != "running":
            return self.rc
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.rc = self.p.wait(SLOW)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            self.rc = None
        self.reader.join(10)
        check("%s: SIGTERM exits 0 with no sanitizer report" % name, self.rc == 0 and not sanitizer_hit(self.stderr()),
              (self.rc, self.stderr()[-3000:]))
        return self.rc


def find_nginx():
    for cand in (os.environ.get("NGINX"), shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def point_config(text, listen, upstreams):
    """The shipped config with its ports replaced, or raises naming what is missing.
    The directives are matched, not the comments that mention the same ports."""
    subs = [(r"(?m)^(\s*listen\s+)8080(\s*;)", r"\g<1>127.0.0.1:%d\2" % listen, "listen 8080;"),
            (r"(?m)^(\s*server\s+)127\.0\.0\.1:8081(\s)", r"\g<1>127.0.0.1:%d\2" % upstreams[0],
             "server 127.0.0.1:8081 ..."),
            (r"(?m)^(\s*server\s+)127\.0\.0\.1:8082(\s)", r"\g<1>127.0.0.1:%d\2" % upstreams[1],
             "server 127.0.0.1:8082 ...")]
    for pattern, repl, what in subs:
        text, n = re.subn(pattern, repl, text)
        if n != 1:
            raise RuntimeError("%s: expected one `%s` line, found %d" % (CONF, what, n))
    return text


class Nginx:
    """nginx in the foreground with the shipped config, prefix = a temp dir."""

    def __init__(self, binary, tmp, upstreams):
        shipped = open(CONF, encoding="utf-8").read()
        self.tmp = tmp
        self.rc = "running"
        for attempt in range(3):
            # A free port can be taken between picking and binding (ctest -j): pick again.
            self.port = free_port()
            self.conf = os.path.join(tmp, "gptc.conf")
            with open(self.conf, "w", encoding="utf-8") as f:
                f.write(point_config(shipped, self.port, upstreams))
            # Not as a daemon: this process is nginx's master, so it can be
            # signalled and waited for. Its own session: should it have to be
            # killed, its workers go with it (killpg), and nothing outlives the test.
            self.p = subprocess.Popen([binary, "-p", tmp + "/", "-c", self.conf, "-g", "daemon off;"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
            if self._wait_listening():
                return
            self._kill()
            err = self.log()
            if "Address already in use" not in err or attempt == 2:
                self.rc = None
                raise RuntimeError("nginx did not start (exit %s): %s" % (self.p.returncode, err))

    def _kill(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()

    def _wait_listening(self):
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline and self.p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def log(self, name="error.log"):
        try:
            text = open(os.path.join(self.tmp, name), encoding="utf-8", errors="replace").read()
        except OSError:
            text = ""
        if name == "error.log" and self.p.poll() is not None and self.p.stderr:
            text += self.p.stderr.read().decode(errors="replace")
        return text

    def stop(self):
        """SIGQUIT: nginx's graceful stop (waits for open requests), which must exit 0."""
        if self.rc != "running":
            return
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGQUIT)
        try:
            self.rc = self.p.wait(SLOW)
        except subprocess.TimeoutExpired:
            self._kill()
            self.rc = None
        err = self.p.stderr.read().decode(errors="replace")
        check("nginx: SIGQUIT exits 0", self.rc == 0, (self.rc, err[-2000:]))
        bad = [ln for ln in self.log().splitlines() if re.search(r"\[(emerg|alert|crit)\]", ln)]
        check("nginx: error.log has no [emerg], [alert] or [crit]", not bad, bad[:5])


class StreamReader(threading.Thread):
    """One streamed completion read line by line, with arrival times."""

    def __init__(self, port, req):
        super().__init__(daemon=True)
        self.port, self.req = port, dict(req, stream=True)
        self.status, self.headers, self.events, self.times = None, {}, [], []
        self.done, self.error, self.well_formed = False, None, True
        self.first = threading.Event()
        self.conn, self.t0 = None, None

    def run(self):
        try:
            self.t0 = time.monotonic()
            self.conn = c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            c.request("POST", "/v1/completions", json.dumps(self.req),
                      {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
            r = c.getresponse()
            self.status = r.status
            self.headers = {k.lower(): v for k, v in r.getheaders()}
            if r.status != 200:
                self.events.append(r.read())
                return
            while True:
                line = r.readline()
                if not line:
                    break
                if line == b"\n":
                    continue
                if not line.startswith(b"data: ") or not line.endswith(b"\n") or self.done:
                    self.well_formed = False
                    continue
                self.times.append(time.monotonic())
                payload = line[6:-1].decode()
                if payload == "[DONE]":
                    self.done = True
                    continue
                self.events.append(json.loads(payload))
                self.first.set()
            c.close()
        except Exception as e:  # noqa: BLE001 - the check that reads it reports it
            self.error = e
        finally:
            self.first.set()

    def text(self):
        return "".join(c["text"] for e in self.events if isinstance(e, dict) for c in e.get("choices", []))

    def finish(self):
        f = [c["finish_reason"] for e in self.events if isinstance(e, dict) for c in e.get("choices", [])]
        return f[-1] if f else None


def greedy(max_tokens, **extra):
    return dict({"model": NAME, "prompt": P1, "max_tokens": max_tokens, "temperature": 0}, **extra)


def same_result(a, b):
    """The parts of two completions that must agree (not id or created)."""
    keys = ("object", "model", "choices", "usage")
    return all(k in a for k in keys) and all(a.get(k) == b.get(k) for k in keys)


# ---- the tests ----

def test_routes(ngx):
    st, _, data = request(ngx.port, "GET", "/health", key=None)
    check("/health through nginx: 200, without the API key", st == 200 and json.loads(data) == {"status": "ok"},
          (st, data))
    st, _, data = request(ngx.port, "GET", "/v1/models")
    ids = [m["id"] for m in json.loads(data).get("data", [])] if st == 200 else []
    check("GET /v1/models through nginx", st == 200 and ids == [NAME], (st, data))
    st, hd, data = request(ngx.port, "GET", "/metrics", key=None)
    check("/metrics through nginx: one server's Prometheus text",
          st == 200 and hd.get("content-type", "").startswith("text/plain") and b"gptc_model_loaded 1" in data,
          (st, data[:300]))
    st, _, data = request(ngx.port, "GET", "/v1/chat/completions")
    check("an unknown /v1/ route reaches gptc: its 404 error object", st == 404 and is_error_object(data), (st, data))
    st, _, data = request(ngx.port, "GET", "/index.html")
    check("a path outside /v1/, /health, /metrics: nginx's 404 as an error object", st == 404 and is_error_object(data),
          (st, data))


def test_same_as_direct(ngx, a, b):
    req = greedy(24)
    sa, direct = complete(a.port, req)
    sb, direct_b = complete(b.port, req)
    check("reference: the same greedy request made to each server directly",
          sa == 200 and sb == 200 and same_result(direct, direct_b), (sa, direct, sb, direct_b))
    for i in range(2):
        st, via = complete(ngx.port, req)
        check("a greedy completion through nginx equals the direct one (%d)" % (i + 1),
              st == 200 and same_result(via, direct), (st, via, direct))
    return direct


def test_stream(ngx, a):
    req = greedy(LONG, ignore_eos=True)
    st, direct = complete(a.port, req)
    r = StreamReader(ngx.port, req)
    r.start()
    r.join(SLOW)
    check("a stream through nginx: 200, text/event-stream, chunked",
          r.status == 200 and r.headers.get("content-type", "").startswith("text/event-stream") and
          r.headers.get("transfer-encoding") == "chunked" and r.error is None, (r.status, r.headers, r.error))
    check("... one data: event per token, well-formed, ending with data: [DONE]",
          len(r.events) == LONG and r.done and r.well_formed, (len(r.events), r.done, r.well_formed))
    check("... its text equals the same completion made directly, not streamed",
          st == 200 and r.text() == direct["choices"][0]["text"] and r.finish() == "length",
          (r.text(), direct))
    # Buffered, the events (about 170 bytes each) would arrive in a few bursts,
    # one per buffer of 4 or 8 KiB, or all at the end; passed through, one at a
    # time as gptc makes them, the first after one token. A loaded machine
    # merges some (a reader that is not scheduled finds several waiting), so
    # the test asks for many bursts, not one per token.
    if len(r.times) >= LONG:
        total, first = r.times[-1] - r.t0, r.times[0] - r.t0
        gaps = [y - x for x, y in zip(r.times, r.times[1:])]
        bursts = 1 + sum(g > 0.25 * (r.times[-1] - r.times[0]) / len(gaps) for g in gaps)
        # (Not "the first event early": on a loaded machine the first token
        # may take most of a stream this short, the rest coming in a rush.)
        check("... not buffered: the events come in many separate bursts",
              bursts >= 10,
              "first event at %.4f s of %.4f s; %d bursts" % (first, total, bursts))
        print("     (first event at %.4f s, [DONE] at %.4f s, %d events in %d bursts)" %
              (first, total, len(r.times), bursts))
    else:
        check("... not buffered: the events come in many separate bursts", False, r.times)


def test_spread(ngx, a, b, direct):
    before = [metrics(s.port).get(COMPLETIONS_OK, 0) for s in (a, b)]
    n = 8
    go = threading.Barrier(n)
    results = [None] * n

    def one(i):
        go.wait()
        results[i] = complete(ngx.port, greedy(24))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SLOW)
    after = [metrics(s.port).get(COMPLETIONS_OK, 0) for s in (a, b)]
    got = [int(x - y) for x, y in zip(after, before)]
    check("%d concurrent completions through nginx all succeed, each equal to the direct one" % n,
          all(r and r[0] == 200 and same_result(r[1], direct) for r in results), results)
    check("... spread over both servers (their /metrics counters)", sum(got) == n and min(got) >= 1, got)
    print("     (split %d / %d)" % tuple(got))


def test_auth(ngx):
    for name, key in (("no API key", None), ("a wrong key", "sk-wrong")):
        st, _, data = request(ngx.port, "POST", "/v1/completions", greedy(2), key=key)
        code = json.loads(data)["error"].get("code") if is_error_object(data) else None
        check("--api-key through nginx: %s is gptc's 401" % name, st == 401 and code == "invalid_api_key", (st, data))
    st, _ = complete(ngx.port, greedy(2))
    check("--api-key through nginx: the right key (Authorization passed through) is 200", st == 200, st)


def test_body_limit(ngx):
    head, tail = b'{"model": "%s", "prompt": "Hi",' % NAME.encode(), b' "max_tokens": 1, "temperature": 0}'
    exact = head + b" " * (MAX_BODY - len(head) - len(tail)) + tail
    st, _, data = request(ngx.port, "POST", "/v1/completions", exact)
    check("a body of exactly 1 MiB (gptc's --max-body) passes nginx and completes", st == 200, (st, data[:300]))
    st, _, data = request(ngx.port, "POST", "/v1/completions", exact + b" ")
    check("one byte more: nginx's 413, as an error object", st == 413 and is_error_object(data), (st, data[:300]))


def wait_idle(servers, limit):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        ms = [metrics(s.port) for s in servers]
        if all(m.get("gptc_running_batch_size") == 0 and m.get("gptc_kv_cache_positions_used") == 0 for m in ms):
            return True
        time.sleep(0.01)
    return False


def test_disconnect(ngx, a, b):
    gen = "gptc_generation_tokens_total"
    before = sum(metrics(s.port).get(gen, 0) for s in (a, b))
    r = StreamReader(ngx.port, greedy(LONG, ignore_eos=True))
    r.start()
    r.first.wait(SLOW)
    sock = r.conn.sock if r.conn else None
    if sock:  # None if the stream already ended: then the check below fails
        sock.shutdown(socket.SHUT_RDWR)
        r.conn.close()
    r.join(SLOW)
    idle = wait_idle((a, b), SLOW)
    made = sum(metrics(s.port).get(gen, 0) for s in (a, b)) - before
    check("a client that leaves mid-stream: nginx drops the upstream and gptc cancels the request",
          r.events and idle and made < LONG, "%d of %d tokens generated, idle %s" % (made, LONG, idle))
    print("     (%d of %d tokens generated before the cancellation)" % (made, LONG))


def test_failover(ngx, a, b, direct):
    b.stop("server B, stopped behind nginx")
    ok = []
    for i in range(6):
        if i % 3 == 2:
            r = StreamReader(ngx.port, greedy(24))
            r.start()
            r.join(SLOW)
            ok.append((r.status, r.done, r.text() == direct["choices"][0]["text"]))
        else:
            st, via = complete(ngx.port, greedy(24))
            ok.append((st, same_result(via, direct)))
    check("with server B stopped, completions and streams through nginx still succeed, unchanged",
          all(x[0] == 200 and all(x[1:]) for x in ok), ok)
    st, _, _ = request(ngx.port, "GET", "/health", key=None)
    check("... and /health through nginx is 200", st == 200, st)
    # The access log names every server a request tried: some request must
    # have been refused by B and then answered by A, or failover never ran.
    lines = ngx.log("access.log").splitlines()
    retried = [ln for ln in lines if "upstream=127.0.0.1:%d, 127.0.0.1:%d " % (b.port, a.port) in ln
               and '"POST /v1/completions' in ln and " 200 " in ln]
    check("... a completion refused by B was passed on to A (access.log)", retried, lines[-8:])
    a.stop("server A, stopped behind nginx")
    st, _, data = request(ngx.port, "POST", "/v1/completions", greedy(2))
    check("with both servers stopped: nginx's 502, as an error object", st == 502 and is_error_object(data),
          (st, data))


def main():
    t_start = time.monotonic()
    binary = find_nginx()
    if binary is None:
        if os.environ.get("GPTC_NO_NGINX") == "1":
            print("skip: nginx is not installed (GPTC_NO_NGINX=1)")
            return 0
        print("FAIL nginx is not installed (not on PATH nor /usr/sbin/nginx): install it with "
              "`scripts/install-deps.sh --test` (or `apt-get install nginx`), or set GPTC_NO_NGINX=1 to skip")
        return 1
    if not os.path.isfile(os.path.join(MODEL, "config.json")):
        print("FAIL fixture model not found: %s" % MODEL)
        return 1
    tmp = tempfile.mkdtemp(prefix="gptc-nginx-")
    # nginx's workers run as an unprivileged user when the test runs as root:
    # let them into the prefix (nothing secret in it).
    os.chmod(tmp, 0o755)
    servers, ngx = [], None
    try:
        for _ in range(2):
            servers.append(Server("--api-key", KEY))
        a, b = [s.wait_ready() for s in servers]
        ngx = Nginx(binary, tmp, [a.port, b.port])
        print("     (nginx %s on port %d; servers on %d and %d)" % (binary, ngx.port, a.port, b.port))
        test_routes(ngx)
        direct = test_same_as_direct(ngx, a, b)
        test_stream(ngx, a)
        test_spread(ngx, a, b, direct)
        test_auth(ngx)
        test_body_limit(ngx)
        test_disconnect(ngx, a, b)
        test_failover(ngx, a, b, direct)
    except Exception:  # noqa: BLE001 - a failure like any other, after which everything is still stopped
        check("the test ran to the end", False, traceback.format_exc())
    finally:
        if ngx:
            ngx.stop()
        for name, s in zip(("server A", "server B"), servers):
            s.stop(name)
        if COUNTS.failed and ngx:
            print("nginx error.log:\n" + ngx.log()[-4000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed (%.1f s)" % (COUNTS.passed, COUNTS.failed, time.monotonic() - t_start))
    return 1 if COUNTS.failed else 0


if __name__ == "__main__":
    sys.exit(main())
