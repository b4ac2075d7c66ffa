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
import hashlib
import os
import random
import re
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection

from harness import (
    gather,
    latency_summary,
    ms,
    percentile,
    raise_fd_limit,
    report_failure,
    stall_summary,
    wait_received,
)
from presence_storm import (
    StormPlan,
    accounts_and_rosters,
    contact_graph,
    sign_in,
    start_storm_workers,
)
from xmpp_sessions import (
    DOMAIN,
    Session,
    answering,
    bench_server,
    close_sessions,
    login_many,
    start_probe,
    stop_probe,
)

NODE = "urn:xmpp:avatar:metadata"
DISCO = "http://jabber.org/protocol/disco#info"
CAPS_NODE = "https://se-appliance.example/bench"
IDENTITY = ("client", "pc", "", "pep-bench")
FEATURES = sorted(
    [DISCO, "http://jabber.org/protocol/caps", NODE, NODE + "+notify", "urn:xmpp:ping"]
)
PROBE_USER = "probe"
MECHANISM = "SCRAM-SHA-1"
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


class PepSession(Session):
    """Answers the server's caps query, records notifications and publish results."""

    ENDS = (b"</message>", b"</iq>", b"/>")

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, jid: str):
        super().__init__(r, w, jid)
        self.caps_answered = 0
        self.got: list[tuple[str, float]] = []  # (item id, when read)
        self.results: dict[str, float] = {}  # item id -> when its publish result was read
        self.publish_errors = 0

    def on_stanzas(self, done: bytes, now: float) -> None:
        for m in CAPS_QUERY.finditer(done):
            self.w.write(disco_answer((m[1] or m[2]).decode()))
            self.caps_answered += 1
        for m in NOTIFIED.finditer(done):
            self.got.append((m[1].decode(), now))
        for m in PUBLISHED.finditer(done):
            self.results[m[1].decode()] = now
        self.publish_errors += done.count(b"type='error'")

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


async def worker_async(conn: Connection, plan: StormPlan) -> None:
    loop = asyncio.get_running_loop()
    sessions: dict[int, PepSession] = {}
    rng = random.Random(plan.seed)
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "login":
            # initial presence with caps right away, as a client does
            accounts = [(i, user_name(i), "desk") for i in plan.users]
            new, failures = await login_many(
                plan.port, plan.mechanism, plan.concurrency, accounts, PepSession, PRESENCE
            )
            sessions.update((s.index, s) for s in new)
            conn.send(("logged_in", sorted(sessions), len(failures), failures[:3]))
        elif cmd[0] == "caps":
            conn.send(("caps", sum(s.caps_answered for s in sessions.values())))
        elif cmd[0] == "ping":
            alive = await answering(sessions.values(), cmd[2], cmd[1])
            conn.send(("alive", [s.index for s in alive]))
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
            close_sessions(conn, sessions.values())
            return


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

    t_run = time.monotonic()
    with bench_server("se-pep-", args.keep) as (server, workers):
        try:
            names = [user_name(i) for i in range(args.users)] + [PROBE_USER]
            graph = contact_graph(args.users, args.contacts, args.seed)
            accounts_and_rosters(server, names, graph, user_name)

            port = server.ports["c2s"]
            probe_conn = start_probe(workers, port, MECHANISM, PROBE_USER)
            conns = start_storm_workers(workers, worker_async, port, MECHANISM, args)
            t0 = time.monotonic()
            logged_in, failed = sign_in(conns)
            print(
                f"{len(logged_in)}/{args.users} sessions signed in with caps in"
                f" {time.monotonic() - t0:.1f}s",
                flush=True,
            )
            # the caps query went out once per ver; a ping round trip on every session after its
            # answer means the server has applied it everywhere
            end = time.monotonic() + 60
            while True:
                answered = sum(a[1] for a in gather(conns, ("caps",), "caps", 60))
                if answered or time.monotonic() > end:
                    break
                time.sleep(0.2)
            alive = sorted(i for a in gather(conns, ("ping", 60, "a"), "alive", 120) for i in a[1])
            print(
                f"caps queries answered: {answered}; {len(alive)} sessions answer ping", flush=True
            )

            cpu0 = server.cpu_seconds()
            start = time.monotonic() + 0.5
            t_start = start
            publish = ("publish", start, args.seconds)
            sent = [x for a in gather(conns, publish, "sent", args.seconds + 120) for x in a[1]]
            live = set(alive)
            expected = sum(sum(c in live for c in graph[u]) + 1 for u, _, _ in sent)
            wait_received(conns, expected, time.monotonic() + args.drain)
            t_drained = time.monotonic()
            cpu = server.cpu_seconds() - cpu0
            got: list[tuple[int, str, float]] = []
            results_at: dict[str, float] = {}
            errors = 0
            for _, g, res, err in gather(conns, ("collect",), "collected", 120):
                got += g
                results_at.update(res)
                errors += err
            samples = stop_probe(probe_conn)
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
                f"notifications/s: {len(got) / span:.0f} (first publish to last arrival,"
                f" {span:.1f}s)"
            )
            print(f"latency publish -> notification: {latency_summary(latencies)}")
            print(
                f"publish round trip (until the stored result): p50 {ms(percentile(rtts, 50))},"
                f" p99 {ms(percentile(rtts, 99))}"
            )
            print(
                f"server CPU while publishing: {cpu:.1f}s"
                f" ({cpu * 1e6 / max(1, len(got)):.0f} us per notification);"
                f" RSS {rss / 1024:.1f} MB; worst probe round trip {ms(stall)}"
                f" (median {ms(median)})"
            )
            print(f"whole run: {time.monotonic() - t_run:.0f}s")
            return 0 if not missing and not extra and failed == 0 and errors == 0 else 1
        except (RuntimeError, TimeoutError, OSError) as e:
            return report_failure(e, server)


if __name__ == "__main__":
    sys.exit(main())
