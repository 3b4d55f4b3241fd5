"""Benchmark: 1 vs 2 gateway replicas on one PostgreSQL.

Starts a throwaway PostgreSQL cluster on loopback (Debian's binaries, as the store's tests do;
`make postgres` installs them), then for 1 and for 2 `openvlthinker serve` processes on the tiny
model sharing that database, the adapters folder and the images folder:
- throughput: `--clients` client threads (`openai` SDK, spread over the replicas) chat with short
  answers for `--seconds`; interactions committed per second is the growth of the interactions
  table over that time, counted in the database;
- propagation: `--promotes` times, promote a version through replica A (both versions loaded
  beforehand) and time until the first answer from the measured replica carries it: A itself with
  1 replica, B with 2 (B learns of it by polling the alias row every `--poll-s`).
Prints one table with the 2-replica / 1-replica ratios.

    .venv/bin/python bench/replicas.py [--clients 8] [--seconds 20] [--promotes 6] [--poll-s 1]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import contextlib
import glob
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

import httpx
from openai import OpenAI
from sqlalchemy import create_engine, text

from openvlthinker.models import DEFAULT_MODEL, random_lora
from serve.launcher import ServerProcess, free_port

MESSAGES = [{"role": "user", "content": "How many circles are there?"}]


@contextlib.contextmanager
def throwaway_postgres():
    """A PostgreSQL server on loopback for this run: the URL of a fresh database; removed afterwards."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        sys.exit("Debian's postgresql is not installed: `make postgres` installs it")
    bindir, root = os.path.dirname(found[-1]), tempfile.mkdtemp(prefix="pg-bench-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # PostgreSQL refuses root
    if as_user:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), free_port()
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    # fsync stays on: commits per second is what is measured
    run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "start", "-o", f"-h 127.0.0.1 -p {port} -k {root}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server: str, name: str) -> str:
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return f"{server}/{name}"


def count_interactions(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM interactions")).scalar())
    engine.dispose()
    return n


def ask(client: OpenAI, max_tokens: int = 2):
    return client.chat.completions.create(model="openvlthinker", messages=MESSAGES, max_tokens=max_tokens, temperature=0)


def throughput(clients: list[OpenAI], threads: int, seconds: float, url: str) -> tuple[float, int]:
    """Interactions committed per second with `threads` clients spread over `clients`; and the failures."""
    stop, failures = threading.Event(), []

    def loop(client):
        while not stop.is_set():
            try:
                ask(client)
            except Exception as exc:  # noqa: BLE001 - counted
                failures.append(repr(exc))

    workers = [threading.Thread(target=loop, args=(clients[i % len(clients)],), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    time.sleep(min(5.0, seconds / 4))  # warm-up: every client in flight
    before, t0 = count_interactions(url), time.perf_counter()
    time.sleep(seconds)
    after, elapsed = count_interactions(url), time.perf_counter() - t0
    stop.set()
    for w in workers:
        w.join(120)
    return (after - before) / elapsed, len(failures)


def propagation(a, measured: OpenAI, admin_key: str, promotes: int) -> list[float]:
    """Seconds from a promote through `a` returning to the first answer from `measured` with that version."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    out = []
    for k in range(promotes):
        version = ("v0001", "v0002")[k % 2]
        r = httpx.post(f"{a.url}/v1/adapters/promote", json={"version": version}, headers=headers, timeout=60)
        r.raise_for_status()
        t0 = time.perf_counter()
        while ask(measured, 1).adapter_version != version:
            pass
        out.append(time.perf_counter() - t0)
    return out


def run(n: int, pg: str, root: Path, args) -> dict:
    url = fresh_database(pg, f"replicas{n}")
    admin_key = secrets.token_hex(8)
    flags = ["--model", args.model, "--store", url, "--adapters-dir", str(root / "adapters"),
             "--images-dir", str(root / "images"), "--admin-key", admin_key, "--registry-poll-s", str(args.poll_s),
             "--threads", "1", "--max-batch", "8", "--max-queue", "256", "--log-level", "warning"]
    servers = []
    try:
        for i in range(n):
            servers.append(ServerProcess([*flags, "--run-dir", str(root / f"run{n}-{i}")],
                                         log_path=root / f"serve{n}-{i}.log", timeout=180))
        clients = [OpenAI(base_url=f"{s.url}/v1", api_key="none", max_retries=0, timeout=120) for s in servers]
        rate, failed = throughput(clients, args.clients, args.seconds, url)
        headers = {"Authorization": f"Bearer {admin_key}"}
        for version in ("v0001", "v0002"):
            httpx.post(f"{servers[0].url}/v1/adapters/load", json={"version": version}, headers=headers,
                       timeout=120).raise_for_status()
        time.sleep(2 * args.poll_s + 2)  # every replica has both loaded: what is timed is the flip alone
        latencies = propagation(servers[0], clients[-1], admin_key, args.promotes)
        return {"rate": rate, "failed": failed, "latencies": latencies}
    finally:
        for s in servers:
            s.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--promotes", type=int, default=6)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, throwaway_postgres() as pg:
        root = Path(tmp)
        for i in (1, 2):
            random_lora(args.model, root / "adapters" / f"policy-v000{i}", seed=i, r=4, scale=0.5)
        one, two = run(1, pg, root, args), run(2, pg, root, args)
    p50 = lambda r: statistics.median(r["latencies"])  # noqa: E731
    worst = lambda r: max(r["latencies"])  # noqa: E731
    print(f"\n{args.clients} clients, max_tokens 2, {args.seconds:.0f} s; {args.promotes} promotes; "
          f"--registry-poll-s {args.poll_s}; {os.cpu_count()} CPU cores")
    print(f"{'':40s} {'1 replica':>10s} {'2 replicas':>11s} {'ratio':>7s}")
    rows = [("interactions committed / s", one["rate"], two["rate"], "{:.1f}"),
            ("promote -> first answer, p50 (s)", p50(one), p50(two), "{:.2f}"),
            ("promote -> first answer, max (s)", worst(one), worst(two), "{:.2f}")]
    for name, x, y, fmt in rows:
        print(f"{name:40s} {fmt.format(x):>10s} {fmt.format(y):>11s} {y / x:>7.2f}")
    print(f"{'failed requests':40s} {one['failed']:>10d} {two['failed']:>11d}")
    print("(1 replica: the answer from the replica that promoted; 2 replicas: from the other one)")


if __name__ == "__main__":
    main()
