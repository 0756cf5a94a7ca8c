#!/usr/bin/env python3
"""By-hand repro of the unbounded method label (hardening issue, item 2): start a loop-store
binary on SQLite, send N requests with distinct invented methods of LEN characters, and print
the store's RSS and the size of /metrics before and after.

Usage: tests/manual/method_flood.py PATH/TO/loop-store [N=100] [LEN=300000]
Not part of the test suite (the suite checks the bound in tests/store/http_abuse.rs); this
measures memory on a release build.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raw_request(port: int, method: str, path: str = "/") -> str:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def metrics_size(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        return len(r.read())


def main() -> None:
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    length = int(sys.argv[3]) if len(sys.argv) > 3 else 300_000
    port = free_port()
    env = dict(os.environ, LOOP_STORE_ADMIN_TOKEN="flood-admin-credential-0000",
               LOOP_STORE_INTROSPECT_TOKEN="flood-introspect-credential-0", RUST_LOG="warn")
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}",
                                 "--data-dir", data], env=env, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
                    break
                except OSError:
                    time.sleep(0.1)
            print(f"before: RSS {rss_kib(proc.pid) / 1024:.1f} MiB, /metrics {metrics_size(port)} bytes")
            statuses = {}
            for i in range(n):
                method = f"M{i:05d}" + "X" * (length - 6)
                status = raw_request(port, method)
                statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.5)
            print(f"after {n} requests with {length}-character methods: answers {statuses}")
            print(f"after:  RSS {rss_kib(proc.pid) / 1024:.1f} MiB, /metrics {metrics_size(port)} bytes")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
