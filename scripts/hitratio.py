#!/usr/bin/env python3
"""The hit-ratio simulation behind scripts/bench-hitratio.sh: a day of users, then the next day.

    scripts/hitratio.py --bin PATH [--users 200] [--clicks 5] [--items 1000] [--zipf 1.0]

A catalogue of `items` assessments on the built-in demo origin, each with three related items
(fixed, drawn with the same Zipf popularity: popular items are linked from many pages). A user's
session is `clicks` clicks: the first on an item drawn from Zipf(s) (a search, a link from
elsewhere), each next one on one of the current item's related items (weights 0.6, 0.3, 0.1) with
probability 0.85, else on a new Zipf item. Users are told apart by address (each its own
loopback address), think 0.2-0.6 s between clicks, and 20 are active at a time.

For warming off and on, in turn, in fresh directories, tierd (L3 and the journal on) serves:
- "yesterday": the users' sessions (seed 1);
- then stops, and waits until every entry's lifetime (10 s, no stale window) has passed;
- "today": tierd starts again on the same files (warming on: its start pass, then predictions),
  and new users (seed 2) click with the same popularity and links.

Prints, for today: the hit ratio overall and by click index, origin requests, warm fetches and
their precision (warmed entries a client was served / warmed entries), the compulsory-miss
figure (1 - distinct URLs / requests: what a cache that starts empty can at best reach), and the
ceiling of any warmer: a URL's first request can only hit if a warm fetch put it there, so the hit
ratio is at most the compulsory figure plus warm fetches / requests (every warm fetch used before
its URL's first request). Exits 0 whatever the figures are: it measures, it does not judge.
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

TOKEN = "hitratio-token"
TTL = 60
RELATED_WEIGHTS = [0.6, 0.3, 0.1]
FOLLOW = 0.85
ACTIVE = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", token=None, timeout=60):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
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


def msum(m, name, **labels):
    total = 0.0
    for k, v in m.items():
        if k != name and not k.startswith(name + "{"):
            continue
        if all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
            total += v
    return total


class Catalogue:
    def __init__(self, items, s, seed=7):
        self.items = list(range(1, items + 1))
        self.weights = [1.0 / (i ** s) for i in self.items]
        rng = random.Random(seed)
        self.related = {i: self.pick(rng, 3) for i in self.items}

    def pick(self, rng, k=1):
        got = rng.choices(self.items, weights=self.weights, k=k)
        return got if k > 1 else got[0]

    def sessions(self, users, clicks, seed):
        rng = random.Random(seed)
        out = []
        for _ in range(users):
            s = [self.pick(rng)]
            while len(s) < clicks:
                if rng.random() < FOLLOW:
                    s.append(rng.choices(self.related[s[-1]], weights=RELATED_WEIGHTS)[0])
                else:
                    s.append(self.pick(rng))
            out.append(s)
        return out


def get(src, port, path):
    """One GET from the loopback address `src`; (status, Cache-Status)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(src, 0)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    cs = ""
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "cache-status":
            cs = v.strip()
    return status, cs


def day(port, sessions, seed):
    """Runs the sessions, ACTIVE users at a time; returns [(click index, hit)]."""
    results = []
    lock = threading.Lock()
    queue = list(enumerate(sessions))
    errors = []

    def user():
        rng = random.Random(seed)
        while True:
            with lock:
                if not queue:
                    return
                n, s = queue.pop(0)
            src = f"127.{seed}.{n // 250}.{n % 250 + 1}"
            for i, item in enumerate(s):
                try:
                    status, cs = get(src, port, f"/api/assessments/{item}")
                except OSError as e:
                    errors.append(str(e))
                    continue
                hit = status == 200 and cs.startswith("tierd; hit")
                with lock:
                    results.append((i, hit))
                time.sleep(rng.uniform(0.2, 0.6))

    threads = [threading.Thread(target=user) for _ in range(ACTIVE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"  {len(errors)} requests failed, e.g. {errors[0]}", flush=True)
    return results


def config(d, port, admin, demo, warming):
    return f"""
[server]
listen = "127.0.0.1:{port}"
[admin]
listen = "{admin}"
token = "{TOKEN}"
[upstream]
url = "http://{demo}"
[tiers.l2]
enabled = false
[tiers.l3]
enabled = true
path = "{d}/tierd.duckdb"
[demo_origin]
enabled = true
listen = "{demo}"
[log]
level = "warn"
[rate_limit]
enabled = false
[warming]
enabled = {"true" if warming else "false"}
[[rules]]
path = "/api/assessments/{{id}}"
ttl_seconds = {TTL}
stale_while_revalidate_seconds = 0
stale_if_error_seconds = 0
"""


def start(binary, cfg, log):
    p = subprocess.Popen([binary, "serve", "--config", cfg], stdout=log, stderr=log)
    return p


def wait_ready(admin, p):
    for _ in range(300):
        if p.poll() is not None:
            sys.exit(f"tierd exited with {p.returncode}")
        try:
            if http(f"http://{admin}/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("tierd did not become ready")


def stop(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run(binary, cat, args, warming):
    d = tempfile.mkdtemp(prefix="tierd-hitratio-")
    try:
        port, demo = free_port(), f"127.0.0.1:{free_port()}"
        admin = f"127.0.0.1:{free_port()}"
        cfg = os.path.join(d, "tierd.toml")
        with open(cfg, "w") as f:
            f.write(config(d, port, admin, demo, warming))
        log = open(os.path.join(d, "tierd.log"), "w")
        yesterday = cat.sessions(args.users, args.clicks, seed=1)
        today = cat.sessions(args.users, args.clicks, seed=2)

        p = start(binary, cfg, log)
        wait_ready(admin, p)
        day(port, yesterday, 1)
        stop(p)
        # Every entry's lifetime passes before the next day.
        time.sleep(TTL + 1)

        p = start(binary, cfg, log)
        wait_ready(admin, p)
        start_pass = None
        if warming:
            for _ in range(1200):
                _, body = http(f"http://{admin}/_tierd/warm", token=TOKEN)
                runs = json.loads(body).get("last_runs", [])
                if runs:
                    start_pass = runs[0]
                    break
                time.sleep(0.1)
        predictions = None
        if warming:
            _, body = http(f"http://{admin}/_tierd/warm", token=TOKEN)
            predictions = json.loads(body)["model"]["predictions"]
        before = metrics(admin)
        started = time.monotonic()
        results = day(port, today, 2)
        took = time.monotonic() - started
        # Let predictions in flight land before counting.
        time.sleep(1)
        after = metrics(admin)
        stop(p)
        log.close()
        if p.returncode not in (0, -signal.SIGINT):
            print(f"  tierd exited with {p.returncode}; log in {d}", flush=True)

        def delta(name, **labels):
            return msum(after, name, **labels) - msum(before, name, **labels)

        n = len(results)
        hits = sum(1 for _, h in results if h)
        by_click = []
        for i in range(args.clicks):
            col = [h for c, h in results if c == i]
            by_click.append(sum(col) / len(col) if col else 0.0)
        distinct = len({item for s in today for item in s})
        warm_all = msum(after, "tierd_warm_fetches_total")
        stored = sum(msum(after, "tierd_warm_fetches_total", outcome=o) for o in ("fetched", "revalidated", "from_tier"))
        used = msum(after, "tierd_warm_used_total")
        origin_today = delta("tierd_origin_requests_total")
        start_origin = sum(msum(before, "tierd_warm_fetches_total", trigger="start", outcome=o) for o in ("fetched", "revalidated"))
        return {
            "warming": warming,
            "requests": n,
            "hit_ratio": hits / n if n else 0.0,
            "by_click": by_click,
            "compulsory": 1 - distinct / n if n else 0.0,
            # The start pass went to the origin before the day's counters were read.
            "origin_requests": origin_today + start_origin,
            "warm_fetches": warm_all,
            "warm_stored": stored,
            "warm_used": used,
            "precision": used / stored if stored else None,
            "start_pass": start_pass,
            "predictions": predictions,
            "skipped": {k: v for k, v in after.items() if k.startswith("tierd_warm_skipped_total") and v > 0},
            "predicted_fetches": msum(after, "tierd_warm_fetches_total", trigger="predict"),
            "day_seconds": took,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ceiling(r, fetches):
    """The best hit ratio any warmer reaches with `fetches` warm fetches: each one a URL asked for
    later that day, fetched before its first request (a first request hits only then)."""
    if not r["requests"]:
        return 0.0
    distinct = round((1 - r["compulsory"]) * r["requests"])
    return 1 - (distinct - min(fetches, distinct)) / r["requests"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    cat = Catalogue(args.items, args.zipf)
    out = []
    for warming in (False, True):
        print(f"warming {'on' if warming else 'off'}: yesterday, {TTL + 1} s gap, today ...", flush=True)
        out.append(run(args.bin, cat, args, warming))
    print()
    print(f"{args.users} users x {args.clicks} clicks over {args.items} items, Zipf {args.zipf}; "
          f"follow a related item {FOLLOW:.0%}; TTL {TTL} s, shorter than the gap")
    print(f"{'':22}{'warming off':>14}{'warming on':>14}")
    off, on = out
    rows = [
        ("hit ratio", lambda r: f"{r['hit_ratio']:.3f}"),
        *[(f"  click {i + 1}", (lambda i: lambda r: f"{r['by_click'][i]:.3f}")(i)) for i in range(args.clicks)],
        ("compulsory-miss figure", lambda r: f"{r['compulsory']:.3f}"),
        ("ceiling, these fetches", lambda r: f"{ceiling(r, r['warm_fetches']):.3f}"),
        ("ceiling, 15% fetches", lambda r: f"{ceiling(r, 0.15 * r['requests']):.3f}"),
        ("origin requests", lambda r: f"{r['origin_requests']:.0f}"),
        ("warm fetches", lambda r: f"{r['warm_fetches']:.0f}"),
        ("  per request", lambda r: f"{r['warm_fetches'] / r['requests']:.3f}" if r["requests"] else "-"),
        ("warmed entries used", lambda r: f"{r['warm_used']:.0f}/{r['warm_stored']:.0f}"),
        ("precision", lambda r: f"{r['precision']:.3f}" if r["precision"] is not None else "-"),
    ]
    for name, f in rows:
        print(f"{name:22}{f(off):>14}{f(on):>14}")
    if on["start_pass"]:
        sp = on["start_pass"]
        print(f"start pass: planned {sp['planned']}, fetched {sp['fetched']}, revalidated {sp['revalidated']}, "
              f"from tiers {sp['from_tiers']}, {sp['duration_ms']} ms")
    print(f"today took {on['day_seconds']:.0f} s; the model held {on['predictions']} predictions; "
          f"{on['predicted_fetches']:.0f} prediction fetches; skipped: {on['skipped'] or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
