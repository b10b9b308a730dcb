"""What the tests of `gptc serve` share (test_serve.py, test_nginx.py): the
check() lines and their counts, the sanitizer-report test, and plain HTTP
calls. Standard library only."""
import http.client
import json

KEY = "sk-test-5a1b2c3d"


class Counts:
    passed = 0
    failed = 0


COUNTS = Counts()


def check(name, ok, detail=""):
    if ok:
        COUNTS.passed += 1
        print("ok   " + name, flush=True)
    else:
        COUNTS.failed += 1
        print("FAIL %s %s" % (name, str(detail)[:2000]), flush=True)
    return ok


def sanitizer_hit(text):
    return any(s in text for s in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "UndefinedBehavior"))


def request(port, method, path, body=None, headers=None, key=KEY, timeout=300):
    """(status, headers with lower-case names, body bytes); a dict or list
    body goes as JSON."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {}
    if key:
        h["Authorization"] = "Bearer " + key
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    try:
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def complete(port, req, **kw):
    """POST /v1/completions: (status, parsed body)."""
    st, hd, data = request(port, "POST", "/v1/completions", req, **kw)
    try:
        return st, json.loads(data)
    except ValueError:
        return st, {"raw": data}


def metrics(port):
    """GET /metrics as {series: value}."""
    st, _, data = request(port, "GET", "/metrics", key=None)
    out = {}
    for line in data.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out
