"""The compliance archive under load: a large archive file, then search, export, verify and
the message-routing rate with archiving off and on.

Generates N archived messages (default 1,000,000) straight into a fresh archive file with the
archive's own append function (the same chain and FTS index the server writes), starts the real
server on it (`se-appliance --config FILE`, temp data dir, loopback ports), and measures over the
control socket, as se-ctl does:

  - search p50/p95: one user over a 7-day window, and one word (FTS5); first page of 50
  - export: `se-ctl archive export --format jsonl` of everything (messages/s, se-ctl peak RSS,
    server RSS) and `--format eml` of one user's conversations
  - verify: the whole chain
  - routing: XMPP ping-pong between session pairs (benchmarks/xmpp_sessions.py's workers),
    archiving off, then policy all, then all + critical

    python benchmarks/archive_load.py --messages 1000000

Loopback only; stops by itself; kills only the server it started.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlite_utils
import xmpp_sessions as xs
from harness import gather, report_failure

from appliance.control_client import ControlClient
from standard_edition.archive import store
from standard_edition.store.database import apply_migrations

DOMAIN = xs.DOMAIN
DAY_US = 86_400 * 1_000_000


def vocabulary(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)}
    return sorted(words)


def generate(path: Path, n: int, users: int, days: int, seed: int = 7) -> dict[str, Any]:
    """n messages among `users` local users (5% with partner.example), spread over `days`."""
    rng = random.Random(seed)
    words = vocabulary(3000, rng)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    apply_migrations(sqlite_utils.Database(conn), store.MIGRATIONS)
    state = store.load_state(conn)
    now = int(time.time() * 1e6)
    ts = now - days * DAY_US
    step = days * DAY_US // max(1, n)
    batch = 5000
    t0 = time.monotonic()
    made = 0
    while made < n:
        entries = []
        for _ in range(min(batch, n - made)):
            ts += rng.randint(0, 2 * step)
            a = f"bench{rng.randrange(users)}@{DOMAIN}"
            if rng.random() < 0.05:
                b = f"p{rng.randrange(50)}@partner.example"
                origin, direction = "federated", "out"
            else:
                b = f"bench{rng.randrange(users)}@{DOMAIN}"
                origin, direction = "internal", "local"
            body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
            entries.append(
                store.Entry(
                    min(ts, now),
                    "message",
                    a,
                    b,
                    body,
                    protocol="xmpp",
                    direction=direction,
                    origin=origin,
                    resource="r",
                    type="chat",
                )
            )
        conn.execute("BEGIN IMMEDIATE")
        state = store.append(conn, state, entries).state
        conn.execute("COMMIT")
        made += len(entries)
        if sys.stderr.isatty():
            sys.stderr.write(f"\rgenerated {made}/{n}")
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    seconds = time.monotonic() - t0
    return {"seconds": seconds, "words": words, "size": path.stat().st_size}


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.95))]


def timed(calls: int, fn: Callable[[int], Any]) -> tuple[list[float], Any]:
    out, last = [], None
    for i in range(calls):
        t0 = time.perf_counter()
        last = fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out, last


def child_peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def routing_rate(
    server: xs.ServerUnderTest, conns: list[Any], seconds: float, window: int
) -> tuple[float, int]:
    results = gather(conns, ("pingpong", seconds, window), "delivered", seconds + 120)
    delivered = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    elapsed = max(r[3] for r in results)
    return delivered / elapsed, errors


def archive_status(server: xs.ServerUnderTest) -> dict[str, Any]:
    return json.loads(server.ctl("status", "--json").stdout)["archive"]  # type: ignore[no-any-return]


def drain_archive(server: xs.ServerUnderTest, limit: float) -> float:
    """Seconds until the archive has written everything queued (at most `limit`)."""
    start = time.monotonic()
    if not archive_status(server).get("pending", 0):
        return 0.0  # nothing owed (the status call's own time is not the archive's)
    while archive_status(server).get("pending", 0) and time.monotonic() - start < limit:
        time.sleep(0.1)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--queries", type=int, default=200, help="searches of each kind")
    ap.add_argument("--sessions", type=int, default=200, help="XMPP sessions for routing")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=8, help="length of each routing phase")
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)

    with xs.bench_server("se-archive-bench-", args.keep) as (server, workers):
        try:
            root = server.root
            (root / "data").mkdir()
            archive = root / "data" / "archive.sqlite3"
            g = generate(archive, args.messages, args.users, args.days)
            print(
                f"generated {args.messages} archived messages in {g['seconds']:.1f}s "
                f"({args.messages / g['seconds']:.0f}/s through the chain + FTS); "
                f"file {g['size'] / 1e6:.0f} MB ({g['size'] / max(1, args.messages):.0f} B/message)"
            )
            t0 = time.monotonic()
            server.start()
            print(
                f"server up on the archive in {time.monotonic() - t0:.1f}s (pid {server.proc.pid})"
            )
            rss_idle = server.rss_kb()
            rng = random.Random(11)
            client = ControlClient(server.config.parent / "data" / "control.sock", timeout=600)

            now = time.time()

            def user_week(i: int) -> Any:
                start = now - rng.uniform(7, args.days) * 86400
                return client.call(
                    "archive.search",
                    user=f"bench{rng.randrange(args.users)}@{DOMAIN}",
                    since=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
                    until=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start + 7 * 86400)),
                    limit=50,
                )

            def one_word(i: int) -> Any:
                return client.call("archive.search", text=rng.choice(g["words"]), limit=50)

            def peer_domain(i: int) -> Any:
                return client.call(
                    "archive.search",
                    user=f"bench{rng.randrange(args.users)}@{DOMAIN}",
                    peer="*@partner.example",
                    limit=50,
                )

            for name, fn in (
                ("user + 7 days", user_week),
                ("one word (FTS5)", one_word),
                ("user + *@partner.example", peer_domain),
            ):
                samples, last = timed(args.queries, fn)
                p50, p95 = percentiles(samples)
                print(
                    f"search {name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                    f"({args.queries} queries; last page had {len(last['records'])} records)"
                )
            samples, _ = timed(
                20, lambda i: client.call("archive.search", text=rng.choice(g["words"]), count=True)
            )
            p50, p95 = percentiles(samples)
            print(
                f"search one word with total count (se-ctl's first page): p50 {p50:.1f} ms, "
                f"p95 {p95:.1f} ms"
            )

            out = root / "all.jsonl"
            t0 = time.monotonic()
            r = server.ctl("archive", "export", "--format", "jsonl", "--out", str(out), "--json")
            export_s = time.monotonic() - t0
            if r.returncode != 0:
                raise RuntimeError(f"export failed: {r.stderr.strip()}")
            exported = json.loads(r.stdout)["records"]
            print(
                f"export JSONL: {exported} messages in {export_s:.1f}s ="
                f" {exported / export_s:.0f}/s; "
                f"se-ctl peak RSS {child_peak_rss_kb() / 1024:.0f} MB; server RSS "
                f"{rss_idle / 1024:.0f} MB before, {server.rss_kb() / 1024:.0f} MB after; "
                f"{out.stat().st_size / 1e6:.0f} MB written"
            )
            out.unlink()
            t0 = time.monotonic()
            r = server.ctl(
                "archive",
                "export",
                "--format",
                "eml",
                "--out",
                str(root / "eml"),
                "--user",
                f"bench1@{DOMAIN}",
                "--json",
            )
            if r.returncode != 0:
                raise RuntimeError(f"EML export failed: {r.stderr.strip()}")
            e = json.loads(r.stdout)
            print(
                f"export EML of one user: {e['records']} messages into {e['files']} conversation "
                f"files in {time.monotonic() - t0:.1f}s"
            )
            t0 = time.monotonic()
            v = client.call("archive.verify")
            print(
                f"verify: {v['records']} records over {v['days']} days "
                f"{'intact' if v['ok'] else 'BROKEN'} in {time.monotonic() - t0:.1f}s"
            )
            client.close()

            # routing with archiving off, then on (all), then on + critical, on one server
            users = [f"bench{i}" for i in range(min(args.users, 100))]
            for u in users:
                server.add_user(u)
            plan_sessions = [(users[i % len(users)], f"r{i}") for i in range(args.sessions)]
            plan = xs.WorkerPlan(server.ports["c2s"], "SCRAM-SHA-1", 50, plan_sessions, args.pairs)
            conns = xs.start_workers(workers, args.workers, plan)
            logged = sum(r[1] for r in gather(conns, ("login",), "logged_in", 600))
            print(f"{logged} XMPP sessions logged in for the routing phases")
            rates: dict[str, float] = {}
            sustained: dict[str, float] = {}
            for label, policy in (
                ("off", ["--mode", "off"]),
                ("all", ["--mode", "all", "--critical", "off"]),
                ("all + critical", ["--mode", "all", "--critical", "on"]),
                ("off again", ["--mode", "off", "--critical", "off"]),
            ):
                server.ctl("archive", "policy", "set", *policy)
                before = archive_status(server)
                rate, errors = routing_rate(server, conns, args.seconds, args.window)
                # what the archive still owes is work of this phase, not of the next one
                catch_up = drain_archive(server, limit=120)
                after = archive_status(server)
                rates[label] = rate
                sustained[label] = rate * args.seconds / (args.seconds + catch_up)
                print(
                    f"routing, archive {label}: {rate:.0f} messages/s ({errors} errors; "
                    f"{after['archived'] - before['archived']} archived in "
                    f"{after['batches'] - before['batches']} batches, "
                    f"{after['failed'] - before['failed']} failed; archive caught up "
                    f"{catch_up:.1f}s after the phase)"
                )
            base = (rates["off"] + rates["off again"]) / 2
            print(
                f"routing rate with archiving on / off: {rates['all'] / base:.2f}x "
                f"(critical: {rates['all + critical'] / base:.2f}x); counting the archive's "
                f"catch-up: {sustained['all'] / base:.2f}x"
            )
            return 0
        except (RuntimeError, TimeoutError) as e:
            return report_failure(e, server)


if __name__ == "__main__":
    sys.exit(main())
