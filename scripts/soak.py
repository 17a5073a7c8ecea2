#!/usr/bin/env python3
"""The shipped configuration, run for a while the way it is used, with faults.

    scripts/soak.py [--minutes M] [--bin PATH]

Runs tierd with config/tierd.toml as shipped (its demo origin, rate limits, rules), with a real
redis-server as its L2, its DuckDB L3 and the access journal (on by default with L3), all in a
temporary directory; only the ports, the file paths and an admin token are overridden. Twenty
clients, each from its own loopback address (so that each stays within the per-client quota as
real users would), read assessments, the dashboard and recommendations, and now and then update an
assessment (a PUT the rules turn into purges). Halfway, Redis is killed; it is started again 15 s
later. Then:

- every response was an answer (no connection error); no 5xx except while Redis was down, and none
  even then (L2 down means misses, never errors);
- what each client got is what it can read: a third of the clients send no Accept-Encoding, a
  third `gzip`, a third `br;q=1, gzip;q=0.5` (as browsers do); a coding is only ever sent to a
  client that accepts it, every JSON body decodes (gunzipped when gzip) and parses, and the clients
  that accept gzip got compressed answers (compression is on as shipped); one request in twenty
  asks for `Range: bytes=0-15`, and a 206 carries exactly those 16 bytes with a matching
  Content-Range;
- L1 kept its entries: it was cleared at most once (on the one re-subscription after Redis came
  back) and holds entries at the end;
- memory stayed bounded (RSS at the end within 1.5x of the middle, under 512 MiB);
- the journal wrote a row for every answered request (the summary's `requests` equals the count
  of responses) and dropped none;
- the admin page renders; SIGTERM stops tierd within 30 s with exit status 0, and the journal file
  then reads the same count of client rows with `tierd sql` (the warmer's fetches aside).

Prints what it measured; exits 1 on the first failed check. Needs redis-server; builds the
release binary unless --bin is given.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "soak-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(msg):
    print(f"SOAK FAILED: {msg}", flush=True)
    sys.exit(1)


def http(url, method="GET", body=None, token=None, timeout=10):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(admin):
    _, body = http(f"http://{admin}/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def metric_sum(m, prefix):
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Client(threading.Thread):
    """One user: keep-alive HTTP/1.1 from its own loopback address, about 20 requests/s."""

    def __init__(self, n, port, stop):
        super().__init__(daemon=True)
        self.src = f"127.0.0.{10 + n}"
        self.port = port
        self.stop = stop
        self.rng = random.Random(n)
        self.statuses = {}
        self.errors = 0
        self.sock = None
        self.accept = ["", "gzip", "br;q=1, gzip;q=0.5"][n % 3]
        self.codings = {}  # Content-Encoding (or "identity") -> responses
        self.partials = 0
        self.bad = []  # what a client could not read, for the report

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=15, source_address=(self.src, 0))

    def request(self, method, path, body=b"", extra=""):
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: soak\r\n{extra}"
        if method in ("PUT", "POST"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode() + body
        if self.sock is None:
            self.connect()
        self.sock.sendall(data)
        f = self.sock.makefile("rb")
        status_line = f.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip()
            headers[k] = v
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
            elif k == "connection" and v.lower() == "close":
                close = True
        data = b""
        if chunked:
            while True:
                size = int(f.readline().split(b";")[0], 16)
                data += f.read(size + 2)[:size]
                if size == 0:
                    break
        elif method != "HEAD":
            data = f.read(length)
        if close:
            self.sock.close()
            self.sock = None
        return status, headers, data

    def check(self, path, ranged, status, headers, data):
        """What a client that sent self.accept (and maybe a Range) can read of this answer."""
        coding = headers.get("content-encoding", "identity")
        self.codings[coding] = self.codings.get(coding, 0) + 1
        if coding != "identity" and coding not in self.accept:
            self.bad.append(f"{path}: {coding} sent to a client accepting {self.accept!r}")
            return
        if status == 206:
            self.partials += 1
            want = "bytes 0-15/"
            if not ranged or len(data) != 16 or not headers.get("content-range", "").startswith(want):
                self.bad.append(f"{path}: 206 {headers.get('content-range')!r} with {len(data)} bytes")
            return
        if status != 200 or not headers.get("content-type", "").startswith("application/json"):
            return
        try:
            if coding == "gzip":
                data = zlib.decompress(data, 16 + zlib.MAX_WBITS)
            if coding in ("identity", "gzip"):
                json.loads(data)
        except (zlib.error, ValueError) as e:
            self.bad.append(f"{path}: {coding} body does not read: {e!r} {data[:60]!r}")

    def run(self):
        while not self.stop.is_set():
            r = self.rng.random()
            if r < 0.6:
                path, method = f"/api/assessments/{self.rng.randint(1, 60)}", "GET"
            elif r < 0.8:
                path, method = "/api/dashboard/overview", "GET"
            elif r < 0.99:
                path, method = f"/api/recommendations/{self.rng.randint(1, 30)}", "GET"
            else:
                path, method = f"/api/assessments/{self.rng.randint(1, 60)}", "PUT"
            try:
                body = b'{"status": "completed"}' if method == "PUT" else b""
                extra = f"Accept-Encoding: {self.accept}\r\n" if self.accept else ""
                ranged = method == "GET" and self.rng.random() < 0.05
                if ranged:
                    extra += "Range: bytes=0-15\r\n"
                s, headers, data = self.request(method, path, body, extra)
                self.statuses[s] = self.statuses.get(s, 0) + 1
                if method == "GET":
                    self.check(path, ranged, s, headers, data)
            except (OSError, ValueError, IndexError) as e:
                self.errors += 1
                if self.errors <= 3:
                    print(f"  client {self.src}: {method} {path}: {e!r}", flush=True)
                if self.sock:
                    self.sock.close()
                self.sock = None
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--bin")
    a = ap.parse_args()
    if not shutil.which("redis-server"):
        fail("redis-server is missing: apt-get install -y redis-server")
    binary = a.bin
    if not binary:
        env = dict(os.environ)
        env.setdefault("CARGO_TARGET_DIR", "/var/tmp/tierd-target")
        lib = subprocess.run([f"{ROOT}/scripts/duckdb-lib.sh"], capture_output=True, text=True, check=True).stdout.strip()
        env.setdefault("DUCKDB_LIB_DIR", lib)
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, env=env, check=True)
        binary = f"{env['CARGO_TARGET_DIR']}/release/tierd"
    work = tempfile.mkdtemp(prefix="tierd-soak.")
    procs = []

    def cleanup():
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)

    try:
        run(binary, work, procs, a.minutes)
    finally:
        cleanup()


def start_redis(work, port, procs):
    p = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                          "--dir", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            time.sleep(0.05)
    fail("redis-server did not start")


def run(binary, work, procs, minutes):
    port, admin, origin, rport = free_port(), free_port(), free_port(), free_port()
    redis = start_redis(work, rport, procs)
    env = dict(os.environ)
    env.update({
        "TIERD__SERVER__LISTEN": f"127.0.0.1:{port}",
        "TIERD__ADMIN__LISTEN": f"127.0.0.1:{admin}",
        "TIERD__ADMIN__TOKEN": TOKEN,
        "TIERD__UPSTREAM__URL": f"http://127.0.0.1:{origin}",
        "TIERD__DEMO_ORIGIN__LISTEN": f"127.0.0.1:{origin}",
        "TIERD__TIERS__L2__URL": f"redis://127.0.0.1:{rport}",
        "TIERD__TIERS__L3__PATH": f"{work}/tierd.duckdb",
        "TIERD__JOURNAL__PATH": f"{work}/tierd.journal.duckdb",
    })
    log = open(f"{work}/tierd.log", "w")
    tierd = subprocess.Popen([binary, "serve", "--config", f"{ROOT}/config/tierd.toml"], env=env,
                             stdout=log, stderr=subprocess.STDOUT, cwd=work)
    procs.append(tierd)
    for _ in range(200):
        try:
            if http(f"http://127.0.0.1:{admin}/healthz", timeout=1)[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        fail("tierd did not start: " + open(f"{work}/tierd.log").read()[-2000:])
    print(f"tierd {binary} with config/tierd.toml, Redis :{rport}, L3 and journal in {work}", flush=True)

    stop = threading.Event()
    clients = [Client(i, port, stop) for i in range(20)]
    for c in clients:
        c.start()
    duration = minutes * 60
    t0 = time.time()
    samples = []
    redis_killed = redis_back = None
    while time.time() - t0 < duration:
        time.sleep(5)
        t = time.time() - t0
        m = metrics(f"127.0.0.1:{admin}")
        samples.append((t, rss_mib(tierd.pid), m.get('tierd_tier_entries{tier="l1"}', 0),
                        metric_sum(m, "tierd_l1_resyncs_total")))
        print(f"  {t:5.0f}s rss {samples[-1][1]:6.1f} MiB  l1 entries {samples[-1][2]:5.0f}  "
              f"resyncs {samples[-1][3]:.0f}  answered {sum(sum(c.statuses.values()) for c in clients)}",
              flush=True)
        if redis_killed is None and t >= duration / 2:
            redis.kill()
            redis.wait()
            redis_killed = t
            print(f"  {t:5.0f}s Redis killed", flush=True)
        if redis_killed is not None and redis_back is None and t >= redis_killed + 15:
            redis = start_redis(work, rport, procs)
            redis_back = t
            print(f"  {t:5.0f}s Redis started again", flush=True)
    stop.set()
    for c in clients:
        c.join(timeout=20)
    statuses = {}
    for c in clients:
        for s, n in c.statuses.items():
            statuses[s] = statuses.get(s, 0) + n
    answered = sum(statuses.values())
    errors = sum(c.errors for c in clients)
    print(f"answered {answered} ({answered / duration:.0f}/s), statuses {dict(sorted(statuses.items()))}, "
          f"connection errors {errors}", flush=True)

    codings, partials = {}, sum(c.partials for c in clients)
    for c in clients:
        for k, n in c.codings.items():
            codings[f"{c.accept or 'none'} -> {k}"] = codings.get(f"{c.accept or 'none'} -> {k}", 0) + n
    print(f"codings {dict(sorted(codings.items()))}, 206 answers {partials}", flush=True)
    if errors:
        fail(f"{errors} requests got no answer")
    bad = [b for c in clients for b in c.bad]
    if bad:
        fail(f"{len(bad)} answers a client could not read, first: {bad[:3]}")
    if not any(k.endswith("-> gzip") for k in codings):
        fail("no client got a gzip answer (compression is on as shipped)")
    if partials == 0:
        fail("no Range request was answered 206")
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    if server_errors:
        fail(f"{server_errors} 5xx answers (L2 down must mean misses, not errors)")
    m = metrics(f"127.0.0.1:{admin}")
    resyncs = metric_sum(m, "tierd_l1_resyncs_total")
    if resyncs > 1:
        fail(f"L1 was cleared {resyncs:.0f} times (once, after Redis came back, is the design)")
    if m.get('tierd_tier_entries{tier="l1"}', 0) <= 0:
        fail("L1 holds nothing at the end")
    mid = [s[1] for s in samples if s[0] >= duration / 2 - 10][0]
    end = samples[-1][1]
    if end > 512 or end > 1.5 * mid:
        fail(f"memory grew: {mid:.1f} MiB halfway, {end:.1f} MiB at the end")
    status, body = http(f"http://127.0.0.1:{admin}/_tierd/analytics/summary?window=1h", token=TOKEN)
    if status != 200:
        fail(f"summary: {status} {body[:200]!r}")
    summary = json.loads(body)
    dropped = metrics(f"127.0.0.1:{admin}").get('tierd_journal_rows_total{outcome="dropped"}', 0)
    print(f"journal: summary requests {summary['requests']}, hit ratio {summary['hit_ratio']:.3f}, "
          f"dropped {dropped:.0f}; L1 resyncs {resyncs:.0f}; RSS {mid:.1f} MiB halfway, {end:.1f} MiB at the end",
          flush=True)
    if summary["requests"] != answered:
        fail(f"the journal has {summary['requests']} requests, the clients got {answered} answers")
    if dropped:
        fail(f"the journal dropped {dropped:.0f} rows")
    status, page = http(f"http://127.0.0.1:{admin}/_tierd/", token=TOKEN)
    if status != 200 or b"<h1>tierd</h1>" not in page:
        fail(f"the page: {status}")
    started = time.time()
    tierd.send_signal(signal.SIGTERM)
    try:
        code = tierd.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("tierd did not stop within 30 s of SIGTERM")
    if code != 0:
        fail(f"tierd exited with {code} on SIGTERM")
    # The warmer's own fetches (outcome 'warm') are rows too, written whenever a refresh falls
    # due, also after the summary was read: only the clients' rows are compared.
    out = subprocess.run([binary, "sql", "--csv", "--file", f"{work}/tierd.journal.duckdb",
                          "SELECT count(*) FILTER (WHERE outcome <> 'warm') AS n, "
                          "count(*) FILTER (WHERE outcome = 'warm') AS w FROM journal"],
                         capture_output=True, text=True)
    counts = out.stdout.strip().splitlines()[-1].split(",") if out.returncode == 0 else []
    if len(counts) != 2 or counts[0] != str(answered):
        fail(f"journal file after stop: {out.stdout!r} {out.stderr!r}")
    errors_logged = sum(1 for line in open(f"{work}/tierd.log") if " ERROR " in line)
    print(f"stopped in {time.time() - started:.1f} s; the file holds {answered} client rows "
          f"and {counts[1]} warm fetches; "
          f"{errors_logged} ERROR lines in the log (Redis outage)", flush=True)
    print("SOAK PASSED", flush=True)


if __name__ == "__main__":
    main()
