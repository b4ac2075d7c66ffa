"""PEP fan-out: how fast and how promptly an avatar change reaches every contact that asked.

U users (500 by default here: --users), each with exactly C mutual contacts (--contacts) and one
session whose XEP-0115 caps announce `urn:xmpp:avatar:metadata+notify`. Each user publishes one
XEP-0084 metadata item (its avatar hash) to its own PEP service; the server must notify the
publisher's own session and each of its C contacts. The run measures notifications per second
and the latency from just before the publish was written to the moment a receiver read the
notification (CLOCK_MONOTONIC, shared by every process on the machine).

    python benchmarks/pep_fanout.py --users 500 --contacts 50 --seconds 10

Set-up, as presence_storm.py does it: the real server (`se-appliance --config FILE`) with its
own temp data dir on free loopback ports; accounts through the control socket; the rosters
(a ring lattice over a seeded shuffle, every subscription 'both') written straight into the
stopped server's SQLite file; then the server again and every user signs in (STARTTLS +
SCRAM-SHA-1, lean raw-XML clients in worker processes) with caps in its initial presence. The
server asks one client per `ver` for its disco#info (the others wait for that answer, then use
the cache); the clients answer with the features their `ver` hashes (XEP-0115 §5.1).

The publishes: Poisson arrivals spread over --seconds, each user once, each item id a fresh
SHA-1 the publisher records with its stamp. Prints: users, contacts, publishes, notifications
expected and received (missing or unexpected ones), notifications/s, latency p50/p95/p99/max,
publish round trip (until the server's result) p50/p99, the server's CPU and RSS, and the
probe's worst round trip (reactor stall). Loopback only; stops by itself; kills only the
server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import sqlite3
import ssl
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from presence_storm import add_users_over_control_socket, contact_graph, percentile
from xmpp_sessions import (
    DOMAIN,
    ServerUnderTest,
    Session,
    expect,
    login,
    probe_main,
    raise_fd_limit,
    stall_summary,
)

NODE = "urn:xmpp:avatar:metadata"
DISCO = "http://jabber.org/protocol/disco#info"
CAPS_NODE = "https://se-appliance.example/bench"
IDENTITY = ("client", "pc", "", "pep-bench")
FEATURES = sorted(
    [DISCO, "http://jabber.org/protocol/caps", NODE, NODE + "+notify", "urn:xmpp:ping"]
)
PROBE_USER = "probe"
# what the clients read: the server's caps query, a notification's item id, a publish result
CAPS_QUERY = re.compile(
    rb"<iq [^>]*id='(caps\d+)'[^>]*type='get'|<iq [^>]*type='get'[^>]*id='(caps\d+)'"
)
NOTIFIED = re.compile(rb"<items node='" + NODE.encode() + rb"'><item id='([0-9a-f]{40})'")
PUBLISHED = re.compile(rb"<iq [^>]*id='pub-([0-9a-f]{40})'")


def user_name(i: int) -> str:
    return f"pep{i}"


def caps_ver() -> str:
    """XEP-0115 §5.1 verification string of what the bench client says it is, SHA-1."""
    s = "/".join(IDENTITY) + "<" + "".join(f + "<" for f in FEATURES)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


VER = caps_ver()
PRESENCE = (
    f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}'"
    f" ver='{VER}'/></presence>"
).encode()


def disco_answer(qid: str) -> bytes:
    cat, typ, _, name = IDENTITY
    feats = "".join(f"<feature var='{f}'/>" for f in FEATURES)
    return (
        f"<iq type='result' id='{qid}' to='{DOMAIN}'><query xmlns='{DISCO}'"
        f" node='{CAPS_NODE}#{VER}'><identity category='{cat}' type='{typ}' name='{name}'/>"
        f"{feats}</query></iq>"
    ).encode()


def write_rosters(db_path: Path, graph: list[list[int]]) -> int:
    """Every contact pair as a mutual ('both') roster item, in the shape core/roster.py keeps."""
    rows = [
        (user_name(u), f"{user_name(c)}@{DOMAIN}", "", "[]", "both", 0, 0, 0, 1)
        for u, contacts in enumerate(graph)
        for c in contacts
    ]
    conn = sqlite3.connect(str(db_path))
    try:
        with conn:
            conn.executemany(
                "INSERT INTO roster (owner, contact, name, groups, subscription, ask,"
                " pending_in, approved, in_roster) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return len(rows)


class PepSession(Session):
    """Answers the server's caps query, records notifications and publish results."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, jid: str):
        super().__init__(r, w, jid)
        self.index = -1
        self.caps_answered = 0
        self.got: list[tuple[str, float]] = []  # (item id, when read)
        self.results: dict[str, float] = {}  # item id -> when its publish result was read
        self.publish_errors = 0

    async def read_loop(self) -> None:
        try:
            while True:
                chunk = await self.r.read(65536)
                if not chunk:
                    break
                now = time.monotonic()
                buf = self.buf + chunk
                cut = max(buf.rfind(b"</message>"), buf.rfind(b"</iq>"), buf.rfind(b"/>"))
                if cut >= 0:
                    end = buf.find(b">", cut) + 1
                    done, self.buf = buf[:end], buf[end:]
                else:
                    done, self.buf = b"", buf
                for m in CAPS_QUERY.finditer(done):
                    self.w.write(disco_answer((m[1] or m[2]).decode()))
                    self.caps_answered += 1
                for m in NOTIFIED.finditer(done):
                    self.got.append((m[1].decode(), now))
                for m in PUBLISHED.finditer(done):
                    self.results[m[1].decode()] = now
                self.publish_errors += done.count(b"type='error'")
                if self.waiting_ping is not None:
                    (m1, m2), fut = self.waiting_ping
                    if m1 in done or m1 in self.buf or m2 in done or m2 in self.buf:
                        self.waiting_ping = None
                        if not fut.done():
                            fut.set_result(None)
                if b"<stream:error" in self.buf or b"</stream:stream>" in self.buf:
                    break
                if len(self.buf) > 1 << 20:
                    self.buf = self.buf[-4096:]
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.dead = True
            if self.waiting_ping is not None and not self.waiting_ping[1].done():
                self.waiting_ping[1].set_exception(ConnectionError("closed"))

    def publish(self, seq: int) -> tuple[str, float]:
        digest = hashlib.sha1(f"{self.jid} {seq} {time.time_ns()}".encode()).hexdigest()
        stamp = time.monotonic()
        self.w.write(
            f"<iq type='set' id='pub-{digest}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
            f"<publish node='{NODE}'><item id='{digest}'><metadata xmlns='{NODE}'>"
            f"<info id='{digest}' bytes='4096' type='image/png' width='96' height='96'/>"
            f"</metadata></item></publish></pubsub></iq>".encode()
        )
        return digest, stamp


@dataclass
class Plan:
    port: int
    concurrency: int
    users: list[int]
    seed: int


async def login_all(plan: Plan, sessions: dict[int, PepSession]) -> list[str]:
    """Sign each user in and send initial presence with caps right away, as a client does."""
    sem = asyncio.Semaphore(plan.concurrency)
    failures: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            try:
                s = await asyncio.wait_for(
                    login(plan.port, user_name(i), "desk", "SCRAM-SHA-1", PepSession), 120
                )
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as e:
                failures.append(f"{user_name(i)}: {type(e).__name__}: {e}"[:300])
                return
            assert isinstance(s, PepSession)
            s.index = i
            sessions[i] = s
            s.reader = asyncio.create_task(s.read_loop())
            s.w.write(PRESENCE)

    await asyncio.gather(*(one(i) for i in plan.users))
    return failures


async def worker_async(conn: Connection, plan: Plan) -> None:
    loop = asyncio.get_running_loop()
    sessions: dict[int, PepSession] = {}
    rng = random.Random(plan.seed)
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "login":
            failures = await login_all(plan, sessions)
            conn.send(("logged_in", sorted(sessions), failures[:3], len(failures)))
        elif cmd[0] == "caps":
            conn.send(("caps", sum(s.caps_answered for s in sessions.values())))
        elif cmd[0] == "ping":
            live = list(sessions.values())
            ok = await asyncio.gather(*(s.ping(f"alive-{cmd[2]}", cmd[1]) for s in live))
            conn.send(("alive", [s.index for s, good in zip(live, ok, strict=True) if good]))
        elif cmd[0] == "publish":
            start, seconds = cmd[1], cmd[2]
            order = [s for s in sessions.values() if not s.dead]
            rng.shuffle(order)
            times = sorted(rng.uniform(start, start + seconds) for _ in order)
            sent = []
            for s, due in zip(order, times, strict=True):
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                digest, stamp = s.publish(1)
                sent.append((s.index, digest, stamp))
            conn.send(("sent", sent))
        elif cmd[0] == "received":
            conn.send(("received", sum(len(s.got) for s in sessions.values())))
        elif cmd[0] == "collect":
            got = [(s.index, d, t) for s in sessions.values() for d, t in s.got]
            results = {d: t for s in sessions.values() for d, t in s.results.items()}
            errors = sum(s.publish_errors for s in sessions.values())
            conn.send(("collected", got, results, errors))
        elif cmd[0] == "quit":
            for s in sessions.values():
                with contextlib.suppress(Exception):
                    s.w.close()
            conn.send(("bye",))
            return


def worker_main(conn: Connection, plan: Plan) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when to stop
    asyncio.run(worker_async(conn, plan))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=200, help="users, one session each")
    ap.add_argument("--contacts", type=int, default=20, help="mutual contacts per user (even)")
    ap.add_argument("--seconds", type=float, default=10, help="publishes spread over this")
    ap.add_argument("--drain", type=float, default=15, help="most seconds to wait for the rest")
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--concurrency", type=int, default=50, help="logins in progress per worker")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, data, log)")
    args = ap.parse_args(argv)
    if args.contacts < 2 or args.contacts % 2 or args.contacts >= args.users:
        ap.error("--contacts must be even, at least 2 and less than --users")
    if args.seconds <= 0 or args.workers < 1:
        ap.error("--seconds must be > 0 and --workers >= 1")
    fds = raise_fd_limit()
    if args.users + 200 > fds:
        print(f"warning: fd limit {fds} is low for {args.users} sessions", file=sys.stderr)

    root = Path(tempfile.mkdtemp(prefix="se-pep-"))
    server = ServerUnderTest(root)
    ctx = mp.get_context("fork")
    procs: list[mp.process.BaseProcess] = []
    conns: list[Connection] = []
    t_run = time.monotonic()
    try:
        server.start()
        names = [user_name(i) for i in range(args.users)] + [PROBE_USER]
        add_users_over_control_socket(root / "data" / "control.sock", names)
        server.stop()
        graph = contact_graph(args.users, args.contacts, args.seed)
        rows = write_rosters(root / "data" / "se.sqlite3", graph)
        print(f"{len(names)} accounts, {rows} roster rows", flush=True)
        server.start()

        probe_conn, child = ctx.Pipe()
        probe = ctx.Process(
            target=probe_main, args=(child, server.ports["c2s"], "SCRAM-SHA-1", PROBE_USER)
        )
        probe.start()
        procs.append(probe)
        expect(probe_conn, "ready", 60)
        for w in range(args.workers):
            parent, child = ctx.Pipe()
            plan = Plan(
                server.ports["c2s"],
                args.concurrency,
                list(range(w, args.users, args.workers)),
                args.seed * 1000 + w,
            )
            p = ctx.Process(target=worker_main, args=(child, plan))
            p.start()
            procs.append(p)
            conns.append(parent)

        t0 = time.monotonic()
        for c in conns:
            c.send(("login",))
        results = [expect(c, "logged_in", 600) for c in conns]
        failed = sum(r[3] for r in results)
        for r in results:
            for err in r[2]:
                print(f"  login failure: {err}")
        print(
            f"{sum(len(r[1]) for r in results)}/{args.users} sessions signed in with caps in"
            f" {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        # the caps query went out once per ver; a ping round trip on every session after its
        # answer means the server has applied it everywhere
        end = time.monotonic() + 60
        while True:
            for c in conns:
                c.send(("caps",))
            answered = sum(expect(c, "caps", 60)[1] for c in conns)
            if answered or time.monotonic() > end:
                break
            time.sleep(0.2)
        for c in conns:
            c.send(("ping", 60, "a"))
        alive = sorted(i for c in conns for i in expect(c, "alive", 120)[1])
        print(f"caps queries answered: {answered}; {len(alive)} sessions answer ping", flush=True)

        cpu0 = server.cpu_seconds()
        start = time.monotonic() + 0.5
        t_start = start
        for c in conns:
            c.send(("publish", start, args.seconds))
        sent = [x for c in conns for x in expect(c, "sent", args.seconds + 120)[1]]
        live = set(alive)
        expected = sum(sum(c in live for c in graph[u]) + 1 for u, _, _ in sent)
        drain_end = time.monotonic() + args.drain
        while True:
            for c in conns:
                c.send(("received",))
            received = sum(expect(c, "received", 60)[1] for c in conns)
            if received >= expected or time.monotonic() >= drain_end:
                break
            time.sleep(0.1)
        t_drained = time.monotonic()
        cpu = server.cpu_seconds() - cpu0
        got: list[tuple[int, str, float]] = []
        results_at: dict[str, float] = {}
        errors = 0
        for c in conns:
            c.send(("collect",))
            _, g, res, err = expect(c, "collected", 120)
            got += g
            results_at.update(res)
            errors += err
        probe_conn.send(("stop",))
        samples = expect(probe_conn, "samples", 30)[1]
        rss = server.rss_kb()

        by_digest = {d: (u, t) for u, d, t in sent}
        wanted = Counter(
            (d, r) for u, d, _ in sent for r in [*(c for c in graph[u] if c in live), u]
        )
        delivered = Counter((d, r) for r, d, _ in got if d in by_digest)
        missing = wanted - delivered
        extra = delivered - wanted
        latencies = sorted(t - by_digest[d][1] for _, d, t in got if d in by_digest)
        rtts = sorted(results_at[d] - t for _, d, t in sent if d in results_at)
        arrivals = [t for _, d, t in got if d in by_digest]
        span = max(1e-9, max(arrivals, default=t_drained) - t_start)
        stall, median = stall_summary(samples, t_start, t_drained)

        def ms(x: float) -> str:
            return "n/a" if x != x else f"{x * 1000:.1f} ms"

        print()
        print(
            f"users: {args.users}, contacts per user: {args.contacts} (all mutual, all with"
            f" {NODE}+notify), sessions: {len(alive)} ({failed} logins failed)"
        )
        print(
            f"publishes: {len(sent)} over {args.seconds:g}s ({len(sent) / args.seconds:.0f}/s"
            f" offered); publish errors: {errors}"
        )
        print(
            f"notifications expected: {sum(wanted.values())} (each publish to the publisher's"
            f" contacts + its own session), received: {len(got)} (missing"
            f" {sum(missing.values())}, unexpected or duplicated {sum(extra.values())})"
        )
        print(
            f"notifications/s: {len(got) / span:.0f} (first publish to last arrival, {span:.1f}s)"
        )
        print(
            f"latency publish -> notification: p50 {ms(percentile(latencies, 50))},"
            f" p95 {ms(percentile(latencies, 95))}, p99 {ms(percentile(latencies, 99))},"
            f" max {ms(latencies[-1] if latencies else float('nan'))}"
        )
        print(
            f"publish round trip (until the stored result): p50 {ms(percentile(rtts, 50))},"
            f" p99 {ms(percentile(rtts, 99))}"
        )
        print(
            f"server CPU while publishing: {cpu:.1f}s ({cpu * 1e6 / max(1, len(got)):.0f} us per"
            f" notification); RSS {rss / 1024:.1f} MB; worst probe round trip {ms(stall)}"
            f" (median {ms(median)})"
        )
        print(f"whole run: {time.monotonic() - t_run:.0f}s")
        return 0 if not missing and not extra and failed == 0 and errors == 0 else 1
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        tail = server.log_tail()
        if tail:
            print(f"--- server log ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        for c in conns:
            with contextlib.suppress(Exception):
                c.send(("quit",))
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
