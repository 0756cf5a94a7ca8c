"""Ory Hydra as the store's introspection peer (imported by scripts/bench; see docs/benchmarks.md).

Hydra is built by scripts/peer-hydra (its Go module, cached outside the repository) and run here on
the benchmark's PostgreSQL server, in a database of its own:

- `hydra migrate sql up`, then `hydra serve all --dev` (plain HTTP on 127.0.0.1; `--dev` is what
  allows an http issuer) with opaque access tokens (`strategies.access_token: opaque`, Hydra's
  default), a 24 h access-token lifespan (no token expires during a run), log level `warn` (at
  `info` Hydra logs every request, which would be slower and unlike a tuned deployment) and
  telemetry off (`sqa.opt_out`);
- the client-secret hasher is pbkdf2 with 1 iteration, so that issuing N tokens through the client
  credentials grant costs seconds, not the hours the default (25,000 iterations) would take. It
  only affects the token endpoint, not introspection;
- one confidential client, then N access tokens through `POST /oauth2/token`
  (`grant_type=client_credentials`), 16 requests in flight; a sample of them is written for wrk.

Introspection is `POST /admin/oauth2/introspect` with a form body (`token=...`), the admin port's
RFC 7662 endpoint, which Hydra serves without authentication (it expects a gateway in front).
"""
import http.client, json, os, signal, subprocess, sys, threading, time, urllib.parse, urllib.request
from base64 import b64encode

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret-0000000000000"
IN_FLIGHT = 16


def _config(path, dsn, public_port, admin_port):
    # JSON is YAML: Hydra reads either.
    cfg = {
        "dsn": dsn,
        "log": {"level": "warn", "format": "json"},
        "sqa": {"opt_out": True},
        "serve": {"public": {"host": "127.0.0.1", "port": public_port},
                  "admin": {"host": "127.0.0.1", "port": admin_port}},
        "urls": {"self": {"issuer": f"http://127.0.0.1:{public_port}/"}},
        "secrets": {"system": ["bench-system-secret-for-hydra-0000000"]},
        "strategies": {"access_token": "opaque"},
        "ttl": {"access_token": "24h"},
        "oauth2": {"hashers": {"algorithm": "pbkdf2", "pbkdf2": {"iterations": 1}}},
    }
    with open(path, "w") as f:
        json.dump(cfg, f)


class Hydra:
    """A running Hydra (public and admin port) on its own database of the given server."""

    def __init__(self, hydra_bin, dsn, work, free_port):
        self.bin, self.work = hydra_bin, work
        self.public_port, self.admin_port = free_port(), free_port()
        self.config = os.path.join(work, "hydra.json")
        _config(self.config, dsn, self.public_port, self.admin_port)
        subprocess.run([hydra_bin, "migrate", "sql", "up", "--yes", "--read-from-env", "--config", self.config],
                       check=True, capture_output=True, text=True)
        self.log = open(os.path.join(work, "hydra.log"), "w")
        self.proc = subprocess.Popen([hydra_bin, "serve", "all", "--dev", "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.public = f"http://127.0.0.1:{self.public_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(self.admin + "/health/ready", timeout=1)
                urllib.request.urlopen(self.public + "/health/ready", timeout=1)
                return
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        sys.exit(f"hydra did not become ready; see {self.log.name}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def create_client(self):
        body = json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                           "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic",
                           "scope": "orders:read subscriptions:read"}).encode()
        req = urllib.request.Request(self.admin + "/admin/clients", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()

    def issue(self, n):
        """N access tokens through the client credentials grant, IN_FLIGHT at a time."""
        auth = "Basic " + b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "orders:read subscriptions:read"})
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": auth}
        tokens, errors, lock = [], [], threading.Lock()
        per = [n // IN_FLIGHT + (1 if i < n % IN_FLIGHT else 0) for i in range(IN_FLIGHT)]

        def worker(count):
            conn = http.client.HTTPConnection("127.0.0.1", self.public_port, timeout=60)
            mine = []
            try:
                for _ in range(count):
                    conn.request("POST", "/oauth2/token", body, headers)
                    r = conn.getresponse()
                    data = r.read()
                    if r.status != 200:
                        raise RuntimeError(f"token endpoint answered {r.status}: {data[:200]!r}")
                    mine.append(json.loads(data)["access_token"])
            except Exception as e:  # reported after join
                errors.append(e)
            finally:
                conn.close()
                with lock:
                    tokens.extend(mine)

        threads = [threading.Thread(target=worker, args=(c,)) for c in per]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit(f"issuing Hydra tokens failed: {errors[0]}")
        return tokens

    def check_active(self, token):
        """Hydra's answer for one token must be active (a sanity check before loading it)."""
        data = urllib.parse.urlencode({"token": token}).encode()
        req = urllib.request.Request(self.admin + "/admin/oauth2/introspect", data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        answer = json.loads(urllib.request.urlopen(req, timeout=10).read())
        if answer.get("active") is not True:
            sys.exit(f"hydra answered {answer} for a token it issued")
        return answer


def setup(hydra_bin, pg_admin, n, sample, work, free_port, psql):
    """Database, migrations, server, client and N tokens; writes SAMPLE of them to work/active.txt.
    Returns (Hydra, seconds taken to issue the tokens)."""
    db = f"hydra_bench_{int(time.time())}"
    psql(["-qc", f"CREATE DATABASE {db}"])
    dsn = pg_admin.rsplit("/", 1)[0] + "/" + db + "?sslmode=disable&max_conns=16&max_idle_conns=16"
    os.makedirs(work, exist_ok=True)
    h = Hydra(hydra_bin, dsn, work, free_port)
    try:
        h.create_client()
        start = time.monotonic()
        tokens = h.issue(n)
        took = time.monotonic() - start
        h.check_active(tokens[0])
        with open(os.path.join(work, "active.txt"), "w") as f:
            f.write("\n".join(tokens[:sample]) + "\n")
    except BaseException:
        h.stop()
        raise
    return h, took


def side_by_side(store_base, store_samples, hydra, hydra_samples, wrk, repeats, repo):
    """Interleaved wrk runs, same settings: loop-store active, loop-store malformed (its HTTP
    ceiling: refused before any lookup), Hydra active. One unrecorded warm-up run of each, then
    REPEATS rounds of the three; medians per series. Returns the result dict."""
    store_lua = os.path.join(repo, "benches/introspect.lua")
    hydra_lua = os.path.join(repo, "benches/introspect_hydra.lua")
    series = {
        "store_active": lambda: wrk(store_base, os.path.join(store_samples, "active.txt"), store_lua, True),
        "store_malformed": lambda: wrk(store_base, os.path.join(store_samples, "malformed.txt"), store_lua, True),
        "hydra_active": lambda: wrk(hydra.admin, os.path.join(hydra_samples, "active.txt"), hydra_lua, False),
    }
    for run in series.values():
        run()
    runs = {k: [] for k in series}
    for _ in range(repeats):
        for k, run in series.items():
            runs[k].append(run())
    out = {}
    for k, rs in runs.items():
        out[k] = {"runs": [{"rps": r[0], "p50_ms": r[1], "p99_ms": r[2]} for r in rs],
                  "rps": _median([r[0] for r in rs]), "p50_ms": _median([r[1] for r in rs]),
                  "p99_ms": _median([r[2] for r in rs])}
    s, c, h = out["store_active"], out["store_malformed"], out["hydra_active"]
    out["throughput_ratio"] = s["rps"] / h["rps"]
    out["p99_ratio"] = h["p99_ms"] / s["p99_ms"]
    out["active_over_ceiling"] = s["rps"] / c["rps"]
    # The same fraction per round (each round's active and malformed runs are adjacent).
    out["active_over_ceiling_by_round"] = [a[0] / m[0] for a, m in zip(runs["store_active"], runs["store_malformed"])]
    return out


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def summary(r, version, tokens, duration, connections, repeats):
    s, c, h = r["store_active"], r["store_malformed"], r["hydra_active"]
    row = lambda name, x: f"| {name} | {x['rps']:.0f} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} |"
    return [f"Side by side on PostgreSQL: loop-store and Ory Hydra {version}, {tokens} tokens each, "
            f"wrk 1 thread {connections} connections, {duration} s, interleaved, after a warm-up run; median of {repeats}.", "",
            "| server | req/s | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: |",
            row("loop-store, active tokens (cache on)", s),
            row("loop-store, malformed tokens (its HTTP ceiling)", c),
            row(f"Hydra {version}, active tokens", h), "",
            f"- loop-store / Hydra throughput: {r['throughput_ratio']:.1f}x (goal >= 10x); Hydra p99 / loop-store p99: {r['p99_ratio']:.1f}x (goal >= 5x)",
            f"- loop-store active / its ceiling: {r['active_over_ceiling']:.2f} (goal >= 0.85); per round: "
            + ", ".join(f"{x:.2f}" for x in r["active_over_ceiling_by_round"]),
            f"- Hydra issued {tokens} tokens (client credentials, pbkdf2 with 1 iteration) in {r['issue_s']:.1f} s"]
