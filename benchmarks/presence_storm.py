"""A presence storm: how fast and how promptly the server fans presence changes out to contacts.

The Skype for Business planning model: every user has about 60 contacts and changes presence
about 4 times an hour. This run compresses that rate (10x by default, more with --rate-factor)
over U users (2,500 by default), each with exactly C mutual contacts (60 by default) and one
session, and measures how many notifications reach the contacts' sessions per second, how long
each took, and the worst reactor stall a user would have felt meanwhile.

    python benchmarks/presence_storm.py --users 2500 --contacts 60 --seconds 30 --rate-factor 10

Set-up, as xmpp_sessions.py does it: the real server (`se-appliance --config FILE`) with its own
temp data dir on free loopback ports; accounts created through the control socket (the requests
se-ctl sends, pipelined on one connection, because 2,500 se-ctl processes take minutes). The
rosters are then written straight into the stopped server's SQLite file (2,500 x 60 handshakes
would take longer than the storm): a ring lattice over a seeded shuffle of the users, so every
user has exactly C contacts and every contact is mutual (subscription 'both'). Then the server
starts again, every user logs in (STARTTLS + SCRAM-SHA-1, lean raw-XML client in several worker
processes) and sends initial presence, and the run waits until those presences have settled.

The storm: each session changes presence as a Poisson process at the compressed rate,
alternating <show>away</show> and available, with a CLOCK_MONOTONIC stamp (shared by every
process on the machine) and the change's id in <status/>. Every session that receives a
presence reads the stamp back: delivery latency is the time from just before the sender wrote
the change to the moment the receiver's read returned it. Every change should reach each of the
sender's C contacts and the sender's own session. A probe session pings the server every 100 ms
throughout; its worst round trip is the worst reactor stall.

Prints: users, contacts per user, changes sent, notifications expected and received (and which
ones went missing), notifications/s, latency p50/p95/p99/max, the worst probe round trip and
the server's RSS. Loopback only; stops by itself; kills only the server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from harness import (
    Workers,
    gather,
    latency_summary,
    machine_busy_seconds,
    ms,
    percentile,
    raise_fd_limit,
    report_failure,
    stall_summary,
    wait_received,
)
from xmpp_sessions import (
    DOMAIN,
    PASSWORD,
    ServerUnderTest,
    Session,
    answering,
    bench_server,
    close_sessions,
    login_many,
    start_probe,
    stop_probe,
)

# SfB planning model: presence changes per user per hour
SFB_CHANGES_PER_HOUR = 4
# what a change carries in <status/>: sender index, the sender's change number, monotonic stamp
STORM_STATUS = re.compile(rb"<status>storm (\d+) (\d+) (\d+\.\d+)</status>")
PROBE_USER = "probe"


def user_name(i: int) -> str:
    return f"storm{i}"


# -- the contact graph -------------------------------------------------------------------------


def contact_graph(users: int, contacts: int, seed: int) -> list[list[int]]:
    """Each user's contacts: a ring lattice (each user linked to the contacts/2 nearest on each
    side) over a seeded shuffle, so every user has exactly `contacts` contacts, all mutual, and
    a user's contacts are spread over all the worker processes."""
    order = list(range(users))
    random.Random(seed).shuffle(order)
    half = contacts // 2
    graph: list[list[int]] = [[] for _ in range(users)]
    for pos, u in enumerate(order):
        for d in range(1, half + 1):
            graph[u].append(order[(pos + d) % users])
            graph[u].append(order[(pos - d) % users])
    return graph


# -- set-up through the control socket and the store -------------------------------------------


def add_users_over_control_socket(sock_path: Path, names: list[str], window: int = 32) -> None:
    """`user.add` for each name, `window` requests in flight on one control-socket connection
    (the JSON-lines protocol se-ctl speaks; see standard_edition/control/server.py)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(str(sock_path))
        f = s.makefile("rwb")
        queue = iter(enumerate(names))
        in_flight = 0
        done = 0
        t0 = time.monotonic()

        def send_next() -> bool:
            nxt = next(queue, None)
            if nxt is None:
                return False
            i, name = nxt
            req = {
                "v": 1,
                "id": i,
                "cmd": "user.add",
                "args": {"jid": f"{name}@{DOMAIN}", "password": PASSWORD},
            }
            f.write(json.dumps(req).encode() + b"\n")
            return True

        for _ in range(window):
            in_flight += send_next()
        f.flush()
        while in_flight:
            line = f.readline()
            if not line:
                raise RuntimeError("the control socket closed during user.add")
            answer = json.loads(line)
            if not answer.get("ok"):
                raise RuntimeError(f"user.add {names[answer.get('id') or 0]}: {answer['error']}")
            in_flight -= 1
            done += 1
            if send_next():
                in_flight += 1
                f.flush()
            if done % 500 == 0 or done == len(names):
                rate = done / max(1e-9, time.monotonic() - t0)
                print(f"  accounts: {done}/{len(names)} ({rate:.0f}/s)", flush=True)


def write_rosters(db_path: Path, graph: list[list[int]], name: Callable[[int], str]) -> int:
    """Roster rows for every contact pair, straight into the stopped server's store: mutual
    subscriptions ('both'), real roster items, nothing pending (the shape core/roster.py keeps).
    User i's account is name(i)."""
    rows = [
        (name(u), f"{name(c)}@{DOMAIN}", "", "[]", "both", 0, 0, 0, 1)
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


def accounts_and_rosters(
    server: ServerUnderTest, names: list[str], graph: list[list[int]], name: Callable[[int], str]
) -> None:
    """The accounts, through the running server's control socket; the rosters, straight into
    the stopped server's store; then the server again, with them."""
    server.start()
    print(f"server up (pid {server.proc.pid if server.proc else '?'}); {server.root}", flush=True)
    t0 = time.monotonic()
    add_users_over_control_socket(server.root / "data" / "control.sock", names)
    print(f"{len(names)} accounts created in {time.monotonic() - t0:.1f}s", flush=True)
    server.stop()
    t0 = time.monotonic()
    rows = write_rosters(server.root / "data" / "se.sqlite3", graph, name)
    print(f"{rows} roster rows written in {time.monotonic() - t0:.1f}s", flush=True)
    t0 = time.monotonic()
    server.start()
    print(f"server restarted in {time.monotonic() - t0:.1f}s", flush=True)


# -- the client side ---------------------------------------------------------------------------


class PresenceSession(Session):
    """A session that counts the presences it receives and records each storm change's
    latency; it also answers Session.ping like the base class."""

    ENDS = (b"</presence>",)

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, jid: str):
        super().__init__(r, w, jid)
        self.presences = 0  # every presence stanza received
        self.got: list[tuple[int, int, float]] = []  # (sender, change number, latency s)
        self.seq = 0
        self.away = False

    def on_stanzas(self, done: bytes, now: float) -> None:
        self.presences += done.count(b"<presence")
        for m in STORM_STATUS.finditer(done):
            self.got.append((int(m[1]), int(m[2]), now - float(m[3])))

    def change(self) -> float:
        """Send the next presence change (away, then available, then away...); returns the
        stamp it carries."""
        self.seq += 1
        self.away = not self.away
        show = b"<show>away</show>" if self.away else b""
        stamp = time.monotonic()
        status = f"<status>storm {self.index} {self.seq} {stamp:.6f}</status>".encode()
        self.w.write(b"<presence>" + show + status + b"</presence>")
        return stamp


@dataclass
class StormPlan:
    port: int
    mechanism: str
    concurrency: int
    users: list[int]  # indices of the users this worker signs in, one session each
    seed: int


async def storm(
    sessions: dict[int, PresenceSession],
    per_user_rate: float,
    start: float,
    seconds: float,
    rng: random.Random,
) -> list[tuple[int, int, float]]:
    """Poisson changes at per_user_rate for each live session, from `start` (monotonic) for
    `seconds`; the merged process of n users is one Poisson process at n times the rate, each
    event falling on a user chosen at random. Returns (sender, change number, stamp) per change."""
    live = [s for s in sessions.values() if not s.dead]
    sent: list[tuple[int, int, float]] = []
    if not live or per_user_rate <= 0:
        await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))
        return sent
    rate = per_user_rate * len(live)
    end = start + seconds
    due = start
    while True:
        due += rng.expovariate(rate)
        if due >= end:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        s = rng.choice(live)
        if s.dead:
            continue
        sent.append((s.index, s.seq + 1, s.change()))
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    return sent


async def worker_async(conn: Connection, plan: StormPlan) -> None:
    loop = asyncio.get_running_loop()
    sessions: dict[int, PresenceSession] = {}
    rng = random.Random(plan.seed)

    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "login":
            t0 = time.monotonic()
            accounts = [(i, user_name(i), "desk") for i in plan.users]
            new, failures = await login_many(
                plan.port,
                plan.mechanism,
                plan.concurrency,
                accounts,
                PresenceSession,
                b"<presence/>",
            )
            sessions.update((s.index, s) for s in new)
            conn.send(("logged_in", sorted(sessions), len(failures), failures[:3], t0))
        elif cmd[0] == "presences":
            conn.send(("presences", {i: s.presences for i, s in sessions.items()}))
        elif cmd[0] == "ping":
            alive = await answering(sessions.values(), cmd[2], cmd[1])
            conn.send(("alive", [s.index for s in alive]))
        elif cmd[0] == "storm":
            per_user_rate, start, seconds = cmd[1], cmd[2], cmd[3]
            for s in sessions.values():
                s.got.clear()
            sent = await storm(sessions, per_user_rate, start, seconds, rng)
            conn.send(("sent", sent))
        elif cmd[0] == "received":
            conn.send(("received", sum(len(s.got) for s in sessions.values())))
        elif cmd[0] == "collect":
            got = [(snd, seq, s.index, lat) for s in sessions.values() for snd, seq, lat in s.got]
            conn.send(("collected", got))
        elif cmd[0] == "quit":
            close_sessions(conn, sessions.values())
            return


# -- the run -----------------------------------------------------------------------------------


def wait_settled(conns: list[Connection], expected: int, timeout: float) -> tuple[int, float]:
    """Poll the workers' presence counts until they reach `expected` or stop growing for 2 s;
    returns (presences received, seconds waited)."""
    t0 = time.monotonic()
    last, last_change = -1, t0
    while True:
        total = sum(sum(a[1].values()) for a in gather(conns, ("presences",), "presences", 60))
        now = time.monotonic()
        if total != last:
            last, last_change = total, now
        if total >= expected or now - last_change >= 2.0 or now - t0 >= timeout:
            return total, now - t0
        time.sleep(0.25)


def start_storm_workers(
    workers: Workers,
    target: Callable[[Connection, StormPlan], Coroutine[Any, Any, None]],
    port: int,
    mechanism: str,
    args: argparse.Namespace,
) -> list[Connection]:
    """args.workers client processes; worker w signs in every args.workers-th user from w."""
    return [
        workers.start(
            target,
            StormPlan(
                port,
                mechanism,
                args.concurrency,
                list(range(w, args.users, args.workers)),
                args.seed * 1000 + w,
            ),
        )
        for w in range(args.workers)
    ]


def sign_in(conns: list[Connection]) -> tuple[list[int], int]:
    """Every worker signs its users in: (the users signed in, how many failed to)."""
    results = gather(conns, ("login",), "logged_in", 600)
    for r in results:
        for err in r[3]:
            print(f"  login failure: {err}")
    return sorted(i for r in results for i in r[1]), sum(r[2] for r in results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2500, help="users, one session each")
    ap.add_argument("--contacts", type=int, default=60, help="mutual contacts per user (even)")
    ap.add_argument("--seconds", type=float, default=30, help="length of the storm")
    ap.add_argument(
        "--rate-factor",
        type=float,
        default=10,
        help=f"times the SfB model's {SFB_CHANGES_PER_HOUR} changes per user per hour",
    )
    ap.add_argument(
        "--drain", type=float, default=10, help="most seconds to wait for late notifications"
    )
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--concurrency", type=int, default=50, help="logins in progress per worker")
    ap.add_argument(
        "--mechanism", choices=["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"], default="SCRAM-SHA-1"
    )
    ap.add_argument("--seed", type=int, default=1, help="contact graph and arrival times")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, data, log)")
    args = ap.parse_args(argv)
    if args.contacts < 2 or args.contacts % 2 or args.contacts >= args.users:
        ap.error("--contacts must be even, at least 2 and less than --users")
    if args.seconds <= 0 or args.rate_factor < 0 or args.workers < 1:
        ap.error("--seconds must be > 0, --rate-factor >= 0, --workers >= 1")

    fds = raise_fd_limit()
    if args.users + 200 > fds:
        print(f"warning: fd limit {fds} is low for {args.users} sessions", file=sys.stderr)

    per_user_rate = SFB_CHANGES_PER_HOUR * args.rate_factor / 3600
    t_run = time.monotonic()
    with bench_server("se-storm-", args.keep) as (server, workers):
        try:
            # 1. accounts and rosters; the server again, with them
            names = [user_name(i) for i in range(args.users)] + [PROBE_USER]
            graph = contact_graph(args.users, args.contacts, args.seed)
            accounts_and_rosters(server, names, graph, user_name)
            time.sleep(1.0)
            rss_idle = server.rss_kb()

            # 2. the probe; the sessions
            port = server.ports["c2s"]
            probe_conn = start_probe(workers, port, args.mechanism, PROBE_USER)
            conns = start_storm_workers(workers, worker_async, port, args.mechanism, args)
            t_login = time.monotonic()
            logged_in, failed = sign_in(conns)
            t_login_end = time.monotonic()
            print(
                f"{len(logged_in)}/{args.users} sessions signed in with initial presence in"
                f" {t_login_end - t_login:.1f}s ({failed} failed)",
                flush=True,
            )

            # every session should get each contact's presence once, and its own
            live = set(logged_in)
            expected_initial = sum(sum(c in live for c in graph[u]) + 1 for u in live)
            initial, settle_s = wait_settled(conns, expected_initial, 120)
            t_settled = time.monotonic()
            print(
                f"initial presence settled: {initial}/{expected_initial} presences delivered,"
                f" {settle_s:.1f}s after the last login",
                flush=True,
            )
            alive = sorted(i for a in gather(conns, ("ping", 30, "a"), "alive", 120) for i in a[1])
            t_pinged = time.monotonic()
            time.sleep(1.0)
            rss_sessions = server.rss_kb()

            # 3. the storm
            print(
                f"storm: {args.seconds:.0f}s at {args.rate_factor:g}x the SfB rate"
                f" ({per_user_rate * 3600:g} changes per user per hour,"
                f" {per_user_rate * len(alive):.1f} changes/s offered)...",
                flush=True,
            )

            def our_cpu() -> float:
                return server.cpu_seconds() + workers.cpu_seconds()

            t_cpu0, cpu0, ours0 = time.monotonic(), server.cpu_seconds(), our_cpu()
            busy0 = machine_busy_seconds()
            start = time.monotonic() + 0.5
            storm_cmd = ("storm", per_user_rate, start, args.seconds)
            sent = [x for a in gather(conns, storm_cmd, "sent", args.seconds + 60) for x in a[1]]
            t_storm_end = time.monotonic()
            cpu_storm = server.cpu_seconds() - cpu0
            others = (machine_busy_seconds() - busy0) - (our_cpu() - ours0)
            cpu_span = max(1e-9, time.monotonic() - t_cpu0)

            live = set(alive)
            expected_to: dict[tuple[int, int], list[int]] = {
                (snd, seq): [c for c in graph[snd] if c in live] + [snd] for snd, seq, _ in sent
            }
            expected = sum(len(v) for v in expected_to.values())
            wait_received(conns, expected, time.monotonic() + args.drain)
            t_drained = time.monotonic()
            got = [g for a in gather(conns, ("collect",), "collected", 120) for g in a[1]]
            alive_after = sum(len(a[1]) for a in gather(conns, ("ping", 30, "b"), "alive", 120))
            samples = stop_probe(probe_conn)
            rss_after = server.rss_kb()

            # 4. what arrived
            delivered = Counter((snd, seq, rcv) for snd, seq, rcv, _ in got)
            wanted = Counter(
                (snd, seq, rcv) for (snd, seq), rcvs in expected_to.items() for rcv in rcvs
            )
            missing = wanted - delivered
            extra = delivered - wanted
            latencies = sorted(lat for *_, lat in got)
            stamps = {(snd, seq): stamp for snd, seq, stamp in sent}
            arrivals = [
                stamps[(snd, seq)] + lat for snd, seq, _, lat in got if (snd, seq) in stamps
            ]
            last_arrival = max(arrivals, default=t_storm_end)
            span = max(1e-9, last_arrival - start)
            stall_storm, median_storm = stall_summary(samples, start, t_drained)
            stall_login, _ = stall_summary(samples, t_login, t_settled)
            stall_ping, _ = stall_summary(samples, t_settled, t_pinged)
            # how long the server took to write one change to all its receivers
            first_last: dict[tuple[int, int], list[float]] = {}
            for snd, seq, _, lat in got:
                seen = first_last.setdefault((snd, seq), [lat, lat])
                seen[0], seen[1] = min(seen[0], lat), max(seen[1], lat)
            spreads = sorted(hi - lo for lo, hi in first_last.values())

            print()
            print(
                f"users: {args.users}, contacts per user: {args.contacts} (all mutual),"
                f" sessions: {len(alive)} answering ping before the storm,"
                f" {alive_after} after ({failed} logins failed)"
            )
            print(
                f"changes sent: {len(sent)} in {args.seconds:.0f}s"
                f" ({len(sent) / args.seconds:.1f}/s; {args.rate_factor:g}x SfB ="
                f" {per_user_rate * 3600:g} per user per hour, Poisson arrivals)"
            )
            print(
                f"notifications expected: {expected} (each change to the sender's"
                f" {args.contacts} contacts + its own session), received: {len(got)}"
                f" (missing {sum(missing.values())}, unexpected or duplicated"
                f" {sum(extra.values())})"
            )
            print(
                f"notifications/s: {len(got) / span:.0f} (first change to last arrival,"
                f" {span:.1f}s)"
            )
            print(f"delivery latency: {latency_summary(latencies)}")
            print(
                f"worst probe round trip (reactor stall, ping every 100 ms): {ms(stall_storm)}"
                f" during the storm (median {ms(median_storm)});"
                f" {ms(stall_login)} during logins and initial presence,"
                f" {ms(stall_ping)} while every session was pinged at once"
            )
            print(
                f"fan-out spread (first to last receiver of one change): p50"
                f" {ms(percentile(spreads, 50))}, p99 {ms(percentile(spreads, 99))},"
                f" max {ms(spreads[-1] if spreads else float('nan'))}"
            )
            print(
                f"server RSS: {rss_idle / 1024:.1f} MB idle with rosters loaded,"
                f" {rss_sessions / 1024:.1f} MB with {len(alive)} sessions,"
                f" {rss_after / 1024:.1f} MB after the storm"
            )
            print(
                f"server CPU during the storm: {cpu_storm / cpu_span * 100:.0f}% of a core"
                f" ({cpu_storm * 1e6 / max(1, len(got)):.0f} us per notification); other"
                f" processes on this machine meanwhile: {max(0.0, others) / cpu_span * 100:.0f}%"
                f" of a core ({os.cpu_count()} cores)"
            )
            p99 = percentile(latencies, 99)
            verdict = {True: "met", False: "MISSED"}
            print(
                f"goal (p99 < 50 ms, stall < 10 ms at 10x SfB; this run {args.rate_factor:g}x):"
                f" p99 {verdict[p99 < 0.05]}, stall {verdict[stall_storm < 0.01]}"
            )
            if missing:
                print("first missing notifications (sender, change, receiver):")
                for (snd, seq, rcv), n in sorted(missing.items())[:10]:
                    print(f"  {user_name(snd)} change {seq} -> {user_name(rcv)} (x{n})")
            print(f"whole run: {time.monotonic() - t_run:.0f}s")
            ok = failed == 0 and not missing and len(alive) == args.users
            return 0 if ok else 1
        except (RuntimeError, TimeoutError, OSError) as e:
            return report_failure(e, server)


if __name__ == "__main__":
    sys.exit(main())
