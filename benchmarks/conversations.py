"""Conversations under load: room fan-out on the conference service, and offline messages kept
across a restart.

Set-up, as xmpp_sessions.py and presence_storm.py do it: the real server (`se-appliance --config
FILE`) with its own temp data dir on free loopback ports, accounts created through the control
socket (the requests se-ctl sends), sessions logged in over STARTTLS + SCRAM-SHA-1 by the lean
raw-XML asyncio client, spread over several worker processes. Each part starts its own server.

Part 1, rooms (XEP-0045 on conference.<domain>): R rooms x K occupants (50 x 20 by default),
one session per occupant, each with initial presence. The first occupant of each room creates
it by joining, then invites the others (mediated invitations, XEP-0045 §7.8.2: ad hoc rooms are
members-only); the others join once invited, and a join is complete when the room's <subject/>
arrives. Then every occupant says a line at a steady rate (--rate per second, each occupant at
its own phase) for --seconds. A line carries its sender, number and a CLOCK_MONOTONIC stamp
(shared by every process on the machine), and reaches all K occupants, the sender's own copy
included: delivery latency is the time from just before the sender wrote the line to the moment
a receiver's read returned it. A probe session pings the server every 100 ms throughout; its
worst round trip is the worst reactor stall.

Part 2, offline messages (XEP-0160, XEP-0203): M messages (100,000 by default) from a few
sender sessions to U recipients who never signed in, evenly spread so no recipient passes the
server's per-user offline quota (core/offline.py QUOTA, 500: past it the sender gets
service-unavailable, XEP-0160 §2), so 250 recipients x 400 by default rather than 100 x 1,000;
paced so the store keeps up (at most --backlog messages sent but not yet in the SQLite file,
which the run reads beside the server). Then the server is stopped with SIGTERM
and started again on the same data dir; the recipients sign in, send initial presence and count
what arrives: every message once, to the right recipient, with a delay stamp. Then the store
should empty, and after a second restart the recipients sign in again and must get nothing.

    python benchmarks/conversations.py                 # both parts, default sizes
    python benchmarks/conversations.py --part rooms --rooms 50 --occupants 20 --seconds 20
    python benchmarks/conversations.py --part offline --messages 100000 --recipients 250

Prints, for rooms: sessions and joins, lines sent, deliveries expected and received (missing,
duplicated), deliveries/s, latency p50/p95/p99/max, the worst probe round trip and the server's
RSS and CPU; for offline: time to store and stored/s, the restart, time to deliver and
delivered/s, lost = sent - delivered, duplicates, misrouted and unstamped messages, and what is
left in the store. Each phase also prints how busy other processes kept the machine, since
latency and stalls on a shared machine mostly measure that. Loopback only; stops by itself;
kills only the servers it started.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    Workers,
    expect,
    gather,
    latency_summary,
    machine_busy_seconds,
    ms,
    raise_fd_limit,
    stall_summary,
)
from presence_storm import add_users_over_control_socket
from xmpp_sessions import (
    DOMAIN,
    ServerUnderTest,
    Session,
    answering,
    close_sessions,
    login_many,
    start_probe,
    stop_probe,
)

try:
    from standard_edition.core.offline import QUOTA as OFFLINE_QUOTA
except ImportError:  # run from a checkout without the package installed
    OFFLINE_QUOTA = 500

CONFERENCE = f"conference.{DOMAIN}"
NS_MUC = "http://jabber.org/protocol/muc"
PROBE_USER = "probe"
# a room line: sender index, the sender's line number, monotonic stamp when it was written
FAN_BODY = re.compile(rb"<body>fan (\d+) (\d+) (\d+\.\d+)</body>")
# an offline message: sender index, global message number
OFF_BODY = re.compile(rb"<body>off (\d+) (\d+)</body>")
DELAY = b"urn:xmpp:delay"
ERROR_TYPES = (b"type='error'", b'type="error"')
STANZA_ERROR = re.compile(rb"<error\b.*?</error>", re.S)


def occupant_name(i: int) -> str:
    return f"conf{i}"


def room_jid(room: int) -> str:
    return f"room{room}@{CONFERENCE}"


def sender_name(i: int) -> str:
    return f"offsender{i}"


def recipient_name(i: int) -> str:
    return f"offrcpt{i}"


# -- the client side ---------------------------------------------------------------------------


class ConvSession(Session):
    """A session that reads room lines and offline messages, notices the end of a room join
    (the <subject/> message) and counts error stanzas; it answers Session.ping as well."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, jid: str):
        super().__init__(r, w, jid)
        self.room = -1
        self.seq = 0
        self.joined = asyncio.Event()
        # room lines: (sender, line number) -> deliveries here, and each delivery's latency
        self.lines: Counter[tuple[int, int]] = Counter()
        self.latencies = array.array("d")
        # offline messages: global message number -> deliveries here; how many had no delay
        self.offline: Counter[int] = Counter()
        self.undelayed = 0
        self.last_arrival = 0.0
        self.first_error = ""

    def on_closed(self) -> None:
        self.joined.set()  # nobody waits on a closed stream

    def on_stanzas(self, done: bytes, now: float) -> None:
        self._messages(done, now)
        if not self.joined.is_set() and (b"<subject" in done):
            self.joined.set()

    def _messages(self, done: bytes, now: float) -> None:
        bad = sum(done.count(t) for t in ERROR_TYPES)
        if bad:
            self.errors += bad
            if not self.first_error:
                m = STANZA_ERROR.search(done)
                self.first_error = (m.group(0) if m else done[-300:]).decode(errors="replace")
        if b"<body>fan " in done:
            for m in FAN_BODY.finditer(done):
                self.lines[(int(m[1]), int(m[2]))] += 1
                self.latencies.append(now - float(m[3]))
            self.last_arrival = now
        if b"<body>off " in done:
            for piece in done.split(b"</message>"):
                m = OFF_BODY.search(piece)
                if m:
                    self.offline[int(m[2])] += 1
                    self.undelayed += DELAY not in piece
            self.last_arrival = now

    def join(self, room: int, nick: str) -> None:
        self.room = room
        self.joined.clear()
        self.w.write(
            f"<presence to='{room_jid(room)}/{nick}'><x xmlns='{NS_MUC}'/></presence>".encode()
        )

    def invite(self, room: int, invitee: str) -> None:
        self.w.write(
            f"<message to='{room_jid(room)}'><x xmlns='{NS_MUC}#user'>"
            f"<invite to='{invitee}@{DOMAIN}'/></x></message>".encode()
        )

    def say(self) -> None:
        self.seq += 1
        stamp = time.monotonic()
        self.w.write(
            f"<message to='{room_jid(self.room)}' type='groupchat' id='f{self.index}-{self.seq}'>"
            f"<body>fan {self.index} {self.seq} {stamp:.6f}</body></message>".encode()
        )


@dataclass
class Seat:
    """One session of a worker: its account, its number, and for rooms its place."""

    user: str
    index: int
    room: int = -1
    nick: str = ""
    invites: list[str] = field(default_factory=list)  # room creators invite these users


@dataclass
class ConvPlan:
    port: int
    mechanism: str
    concurrency: int
    seats: list[Seat]
    seed: int
    presence: bool = True  # send initial presence right after login
    db_path: str = ""  # the sender of offline messages watches the store fill


async def login_all(plan: ConvPlan, sessions: list[ConvSession]) -> list[str]:
    accounts = [(seat.index, seat.user, "desk") for seat in plan.seats]
    presence = b"<presence/>" if plan.presence else None
    new, failures = await login_many(
        plan.port, plan.mechanism, plan.concurrency, accounts, ConvSession, presence
    )
    sessions += new
    sessions.sort(key=lambda s: s.index)
    return failures


async def join_rooms(
    sessions: list[ConvSession], seats: dict[int, Seat], creators: bool, timeout: float
) -> tuple[int, list[str]]:
    """Creators (or everyone else) join their rooms; a creator then invites the rest and waits
    for a ping answer, so the invitations are in before anyone is told to join."""
    picked = [s for s in sessions if not s.dead and bool(seats[s.index].invites) == creators]
    for s in picked:
        seat = seats[s.index]
        s.join(seat.room, seat.nick)
    failures: list[str] = []

    async def wait(s: ConvSession) -> bool:
        try:
            await asyncio.wait_for(s.joined.wait(), timeout)
        except TimeoutError:
            failures.append(f"{s.jid}: no <subject/> from room{s.room}: {s.buf[-300:]!r}")
            return False
        if s.dead:
            failures.append(f"{s.jid}: stream closed while joining room{s.room}")
            return False
        seat = seats[s.index]
        for user in seat.invites:
            s.invite(seat.room, user)
        if seat.invites and not await s.ping(f"invited{s.index}", timeout):
            failures.append(f"{s.jid}: no ping answer after the invitations")
            return False
        return True

    ok = await asyncio.gather(*(wait(s) for s in picked))
    return sum(ok), failures


async def talk(
    sessions: list[ConvSession], rate: float, start: float, seconds: float, rng: random.Random
) -> dict[int, int]:
    """Every live occupant says a line each 1/rate seconds at its own random phase, from
    `start` (monotonic) for `seconds`. Returns each sender's number of lines."""
    live = [s for s in sessions if not s.dead and s.joined.is_set() and s.room >= 0]
    period = 1.0 / rate
    phased = sorted(((rng.random() * period, i) for i in range(len(live))), key=lambda x: x[0])
    end = start + seconds
    rounds = int(seconds * rate) + 1
    for n in range(rounds):
        for phase, i in phased:
            due = start + n * period + phase
            if due >= end:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            s = live[i]
            if not s.dead:
                s.say()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    return {s.index: s.seq for s in live}


def stored_count(db_path: str) -> int:
    """Messages in the offline table, read from the server's SQLite file beside it (WAL)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM offline").fetchone()[0])
    finally:
        conn.close()


async def send_offline(
    sessions: list[ConvSession],
    total: int,
    recipients: int,
    batch: int,
    backlog: int,
    db_path: str,
) -> tuple[int, float, float, int]:
    """`total` chat messages from the senders to recipient (n % recipients) for message n, in
    rounds of `batch` per sender, each round closed by a ping; no new round while more than
    `backlog` sent messages are not yet in the store. Returns (sent, first, last, pauses)."""
    live = [s for s in sessions if not s.dead]
    n = 0
    pauses = 0
    t_first = time.monotonic()
    base = stored_count(db_path)
    while n < total and live:
        for s in live:
            out = []
            for _ in range(batch):
                if n >= total:
                    break
                to = recipient_name(n % recipients)
                out.append(
                    f"<message to='{to}@{DOMAIN}' type='chat' id='o{n}'>"
                    f"<body>off {s.index} {n}</body></message>"
                )
                n += 1
            s.w.write("".join(out).encode())
        ok = await asyncio.gather(*(s.ping(f"sent{n}-{s.index}", 60) for s in live))
        if not all(ok):
            break
        errors = sum(s.errors for s in live)
        while n - errors - (stored_count(db_path) - base) > backlog:
            pauses += 1
            await asyncio.sleep(0.02)
    return n, t_first, time.monotonic(), pauses


async def worker_async(conn: Connection, plan: ConvPlan) -> None:
    loop = asyncio.get_running_loop()
    sessions: list[ConvSession] = []
    seats = {seat.index: seat for seat in plan.seats}
    rng = random.Random(plan.seed)

    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd[0] == "login":
            t0 = time.monotonic()
            failures = await login_all(plan, sessions)
            conn.send(("logged_in", len(sessions), len(failures), failures[:3], t0))
        elif cmd[0] == "join":
            ok, failures = await join_rooms(sessions, seats, cmd[1], cmd[2])
            conn.send(("joined", ok, failures[:3]))
        elif cmd[0] == "ping":
            conn.send(("alive", len(await answering(sessions, cmd[2], cmd[1]))))
        elif cmd[0] == "talk":
            for s in sessions:
                s.lines.clear()
                s.latencies = array.array("d")
                s.errors = 0
            sent = await talk(sessions, cmd[1], cmd[2], cmd[3], rng)
            conn.send(("said", sent))
        elif cmd[0] == "received":
            conn.send(
                (
                    "received",
                    sum(s.lines.total() + s.offline.total() for s in sessions),
                    max((s.last_arrival for s in sessions), default=0.0),
                )
            )
        elif cmd[0] == "collect_lines":
            lines: Counter[tuple[int, int]] = Counter()
            lat = array.array("d")
            for s in sessions:
                lines.update(s.lines)
                lat.extend(s.latencies)
            errs = [s.first_error for s in sessions if s.first_error][:3]
            conn.send(("lines", dict(lines), lat.tobytes(), sum(s.errors for s in sessions), errs))
        elif cmd[0] == "send_offline":
            sent = await send_offline(sessions, *cmd[1:])
            await asyncio.sleep(0.5)  # late error bounces
            errs = [s.first_error for s in sessions if s.first_error][:3]
            conn.send(("sent_offline", *sent, sum(s.errors for s in sessions), errs))
        elif cmd[0] == "presence":
            t0 = time.monotonic()
            for s in sessions:
                s.w.write(b"<presence/>")
            conn.send(("presence_sent", t0))
        elif cmd[0] == "collect_offline":
            got = [(s.index, n, k) for s in sessions for n, k in s.offline.items()]
            undelayed = sum(s.undelayed for s in sessions)
            errs = [s.first_error for s in sessions if s.first_error][:3]
            conn.send(("offline", got, undelayed, sum(s.errors for s in sessions), errs))
        elif cmd[0] == "quit":
            close_sessions(conn, sessions)
            return


# -- the coordinator ---------------------------------------------------------------------------


class MachineLoad:
    """How busy the machine's other processes kept its CPUs since `start`:
    figures taken on a shared machine are read with this beside them."""

    def __init__(self, server: ServerUnderTest, run: Workers) -> None:
        self.server, self.run = server, run
        self.start()

    def start(self) -> None:
        self.t0, self.busy0 = time.monotonic(), machine_busy_seconds()
        self.ours0 = self.server.cpu_seconds() + self.run.cpu_seconds()

    def others(self) -> str:
        span = max(1e-9, time.monotonic() - self.t0)
        ours = self.server.cpu_seconds() + self.run.cpu_seconds() - self.ours0
        others = max(0.0, machine_busy_seconds() - self.busy0 - ours)
        return (
            f"other processes on this machine meanwhile: {others / span * 100:.0f}% of a core"
            f" ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})"
        )


def drain(conns: list[Connection], expected: int, quiet: float, limit: float) -> tuple[int, float]:
    """Poll the workers' receive counts until `expected` arrived, nothing came for `quiet`
    seconds, or `limit` passed; returns (received, monotonic time of the last arrival)."""
    t0 = time.monotonic()
    last, last_change = -1, t0
    while True:
        answers = gather(conns, ("received",), "received", 60)
        got, last_arrival = sum(a[1] for a in answers), max(a[2] for a in answers)
        now = time.monotonic()
        if got != last:
            last, last_change = got, now
        if got >= expected or now - last_change >= quiet or now - t0 >= limit:
            return got, last_arrival
        time.sleep(0.1)


def start_server(root: Path, names: list[str]) -> ServerUnderTest:
    server = ServerUnderTest(root)
    server.start()
    t0 = time.monotonic()
    add_users_over_control_socket(root / "data" / "control.sock", names)
    print(f"{len(names)} accounts created in {time.monotonic() - t0:.1f}s", flush=True)
    return server


def rooms_part(args: argparse.Namespace, root: Path) -> bool:
    n = args.rooms * args.occupants
    print(
        f"== rooms: {args.rooms} rooms x {args.occupants} occupants ({n} sessions),"
        f" a line each {1 / args.rate:g}s per occupant for {args.seconds:g}s",
        flush=True,
    )
    server = start_server(root, [occupant_name(i) for i in range(n)] + [PROBE_USER])
    run = Workers()
    try:
        assert server.proc is not None
        port = server.ports["c2s"]
        rss_idle = server.rss_kb()
        probe = start_probe(run, port, args.mechanism, PROBE_USER)

        # occupant i is in room i // K with nick u<i % K>; the first of a room creates it
        seats = []
        for i in range(n):
            room, k = divmod(i, args.occupants)
            invites = (
                [occupant_name(room * args.occupants + j) for j in range(1, args.occupants)]
                if k == 0
                else []
            )
            seats.append(Seat(occupant_name(i), i, room, f"u{k}", invites))
        plans = [
            ConvPlan(port, args.mechanism, args.concurrency, seats[w :: args.workers], w + 1)
            for w in range(args.workers)
        ]
        conns = [run.start(worker_async, p) for p in plans]

        t_login = time.monotonic()
        results = gather(conns, ("login",), "logged_in", 600)
        logged_in = sum(r[1] for r in results)
        failed = sum(r[2] for r in results)
        for r in results:
            for err in r[3]:
                print(f"  login failure: {err}")
        t_join = time.monotonic()
        print(
            f"{logged_in}/{n} sessions signed in with initial presence in"
            f" {t_join - t_login:.1f}s ({failed} failed)",
            flush=True,
        )
        made = gather(conns, ("join", True, 60), "joined", 120)
        joined = gather(conns, ("join", False, 60), "joined", 120)
        t_joined = time.monotonic()
        in_rooms = sum(r[1] for r in made + joined)
        for r in made + joined:
            for err in r[2]:
                print(f"  join failure: {err}")
        print(
            f"{sum(r[1] for r in made)} rooms created, {in_rooms}/{n} occupants in their rooms"
            f" after {t_joined - t_join:.1f}s (create, invite, join; each join ends with"
            " <subject/>)",
            flush=True,
        )
        alive = sum(r[1] for r in gather(conns, ("ping", 30, "a"), "alive", 120))
        time.sleep(1.0)
        rss_rooms = server.rss_kb()

        cpu0, ours0 = server.cpu_seconds(), run.cpu_seconds()
        load = MachineLoad(server, run)
        start = time.monotonic() + 0.5
        said = gather(conns, ("talk", args.rate, start, args.seconds), "said", args.seconds + 120)
        t_said = time.monotonic()
        sent: dict[int, int] = {}
        for r in said:
            sent.update(r[1])
        lines_sent = sum(sent.values())
        expected = lines_sent * args.occupants
        received, last_arrival = drain(conns, expected, 3.0, args.drain)
        t_drained = time.monotonic()
        cpu_server = server.cpu_seconds() - cpu0
        cpu_clients = run.cpu_seconds() - ours0
        load_talk = load.others()
        span_cpu = t_drained - start
        rss_after = server.rss_kb()

        collected = gather(conns, ("collect_lines",), "lines", 120)
        deliveries: Counter[tuple[int, int]] = Counter()
        latencies = array.array("d")
        error_bounces = 0
        first_errors: list[str] = []
        for r in collected:
            deliveries.update(r[1])
            latencies.frombytes(r[2])
            error_bounces += r[3]
            first_errors += r[4]
        alive_after = sum(r[1] for r in gather(conns, ("ping", 30, "b"), "alive", 120))
        samples = stop_probe(probe)

        wanted = {(snd, seq) for snd, count in sent.items() for seq in range(1, count + 1)}
        missing = sum(max(0, args.occupants - deliveries.get(key, 0)) for key in wanted)
        extra = sum(max(0, k - args.occupants) for k in deliveries.values()) + sum(
            k for key, k in deliveries.items() if key not in wanted
        )
        lat = sorted(latencies)
        span = max(1e-9, last_arrival - start)
        stall, stall_median = stall_summary(samples, start, t_drained)
        stall_join, _ = stall_summary(samples, t_login, t_joined)

        print()
        print(
            f"rooms: {args.rooms} x {args.occupants} occupants; sessions answering ping:"
            f" {alive}/{n} before, {alive_after} after ({failed} logins failed,"
            f" {n - in_rooms} joins failed)"
        )
        print(
            f"lines sent: {lines_sent} in {args.seconds:g}s ({lines_sent / args.seconds:.0f}/s;"
            f" {args.rate:g} per occupant per second, steady, random phase)"
        )
        print(
            f"deliveries expected: {expected} (each line to all {args.occupants} occupants,"
            f" the sender's own copy included), received: {received}"
            f" (missing {missing}, duplicated or unexpected {extra}; {error_bounces} error"
            " stanzas)"
        )
        for err in first_errors[:3]:
            print(f"  error stanza: {err[:300]}")
        print(
            f"messages delivered/s: {received / span:.0f}"
            f" (first line to last delivery, {span:.1f}s; lines over"
            f" {t_said - start:.1f}s)"
        )
        print(f"delivery latency: {latency_summary(lat)}")
        print(
            f"worst probe round trip (reactor stall, ping every 100 ms): {ms(stall)} while"
            f" talking (median {ms(stall_median)}); {ms(stall_join)} during logins and joins"
        )
        print(
            f"server RSS: {rss_idle / 1024:.1f} MB idle, {rss_rooms / 1024:.1f} MB with"
            f" {in_rooms} occupants in {args.rooms} rooms, {rss_after / 1024:.1f} MB after"
            " talking"
        )
        print(
            f"server CPU while talking: {cpu_server / span_cpu * 100:.0f}% of a core"
            f" ({cpu_server * 1e6 / max(1, received):.0f} us per delivery); the client"
            f" processes: {cpu_clients / span_cpu * 100:.0f}% of a core; {load_talk}"
        )
        print(flush=True)
        return failed == 0 and in_rooms == n and missing == 0 and extra == 0
    finally:
        try:
            run.close()
        finally:
            server.stop()


def offline_part(args: argparse.Namespace, root: Path) -> bool:
    per = args.messages // args.recipients
    print(
        f"== offline: {args.messages} messages from {args.senders} senders to"
        f" {args.recipients} recipients who are not signed in ({per} each;"
        f" the server keeps {OFFLINE_QUOTA} per user)",
        flush=True,
    )
    names = [sender_name(i) for i in range(args.senders)]
    names += [recipient_name(i) for i in range(args.recipients)] + [PROBE_USER]
    server = start_server(root, names)
    db_path = str(root / "data" / "se.sqlite3")
    run = Workers()
    ok = True
    try:
        assert server.proc is not None
        probe = start_probe(run, server.ports["c2s"], args.mechanism, PROBE_USER)
        senders = [Seat(sender_name(i), i) for i in range(args.senders)]
        plan = ConvPlan(server.ports["c2s"], args.mechanism, args.concurrency, senders, 1)
        plan.presence = True
        sender = run.start(worker_async, plan)
        r = expect_login(sender, args.senders)
        ok = ok and r

        cpu0 = server.cpu_seconds()
        load = MachineLoad(server, run)
        stored0 = stored_count(db_path)
        sender.send(
            ("send_offline", args.messages, args.recipients, args.batch, args.backlog, db_path)
        )
        _, sent, t_first, t_sent, pauses, bounces, bounce_text = expect(
            sender, "sent_offline", 3600
        )
        # the store catches up with the last messages
        end = time.monotonic() + 120
        stored = stored_count(db_path) - stored0
        while stored < sent - bounces and time.monotonic() < end:
            time.sleep(0.01)
            stored = stored_count(db_path) - stored0
        t_stored = time.monotonic()
        cpu_store = server.cpu_seconds() - cpu0
        load_store = load.others()
        store_s = t_stored - t_first
        rss_stored = server.rss_kb()
        run.quit([sender])
        samples = stop_probe(probe)
        stall_store, _ = stall_summary(samples, t_first, t_stored)
        print(
            f"stored: {stored}/{sent} in {store_s:.1f}s ({stored / store_s:.0f}/s; sending took"
            f" {t_sent - t_first:.1f}s, {pauses} pauses at a backlog of {args.backlog});"
            f" {bounces} error bounces",
            flush=True,
        )
        for err in bounce_text:
            print(f"  error stanza: {err[:300]}")

        # SIGTERM, then the same data dir again
        t0 = time.monotonic()
        server.stop()
        t_stopped = time.monotonic()
        code = server.proc.returncode
        at_rest = stored_count(db_path)
        server.start()
        t_up = time.monotonic()
        print(
            f"restart: stopped in {t_stopped - t0:.1f}s (exit code {code}), {at_rest} messages"
            f" in the store at rest, up again in {t_up - t_stopped:.1f}s",
            flush=True,
        )
        rss_restarted = server.rss_kb()
        port = server.ports["c2s"]
        probe = start_probe(run, port, args.mechanism, PROBE_USER)
        seats = [Seat(recipient_name(i), i) for i in range(args.recipients)]
        plans = [
            ConvPlan(port, args.mechanism, args.concurrency, seats[w :: args.workers], w + 1)
            for w in range(args.workers)
        ]
        for p in plans:
            p.presence = False  # stored messages come with initial presence, sent all at once
        conns = [run.start(worker_async, p) for p in plans]
        t_login = time.monotonic()
        results = gather(conns, ("login",), "logged_in", 600)
        logged_in = sum(r[1] for r in results)
        for r in results:
            for err in r[3]:
                print(f"  login failure: {err}")
        print(
            f"{logged_in}/{args.recipients} recipients signed in in"
            f" {time.monotonic() - t_login:.1f}s; initial presence from all",
            flush=True,
        )
        cpu0 = server.cpu_seconds()
        load.start()
        t_presence = min(r[1] for r in gather(conns, ("presence",), "presence_sent", 60))
        received, last_arrival = drain(conns, sent - bounces, args.quiet, args.drain)
        t_drained = time.monotonic()
        cpu_deliver = server.cpu_seconds() - cpu0
        load_deliver = load.others()
        deliver_s = max(1e-9, last_arrival - t_presence)
        rss_delivered = server.rss_kb()
        collected = gather(conns, ("collect_offline",), "offline", 120)
        samples = stop_probe(probe)
        stall_deliver, _ = stall_summary(samples, t_presence, t_drained)
        # the store forgets what it handed over (the rows go after delivery, in the background)
        left = stored_count(db_path)
        while left and time.monotonic() - t_drained < 30:
            time.sleep(0.2)
            left = stored_count(db_path)
        emptied = time.monotonic() - t_drained

        # a second restart and sign-in: nothing may come twice
        run.quit(conns)
        server.stop()
        server.start()
        port = server.ports["c2s"]
        for p in plans:
            p.port = port
        conns = [run.start(worker_async, p) for p in plans]
        gather(conns, ("login",), "logged_in", 600)
        gather(conns, ("presence",), "presence_sent", 60)
        again, _ = drain(conns, sent, 3.0, args.drain)
        again_left = stored_count(db_path)

        per_message: Counter[int] = Counter()
        misrouted = 0
        for r in collected:
            for rcpt, number, k in r[1]:
                per_message[number] += k
                misrouted += k * (number % args.recipients != rcpt)
        undelayed = sum(r[2] for r in collected)
        rcpt_errors = sum(r[3] for r in collected)
        delivered = len([m for m in per_message if m < sent])
        duplicates = sum(k - 1 for k in per_message.values()) + again
        lost = sent - delivered

        print()
        print(
            f"offline messages: {sent} sent to {args.recipients} recipients ({per} each, from"
            f" {args.senders} sender sessions); the server bounced {bounces}"
        )
        print(
            f"time to store: {store_s:.1f}s ({stored / store_s:.0f} messages/s into the store,"
            f" server {cpu_store / store_s * 100:.0f}% of a core; worst probe round trip"
            f" {ms(stall_store)}; {load_store})"
        )
        print(
            f"restart: SIGTERM to exit {t_stopped - t0:.1f}s (code {code}), start"
            f" {t_up - t_stopped:.1f}s; {at_rest} in the store across it"
        )
        print(
            f"time to deliver: {deliver_s:.1f}s from initial presence to the last message"
            f" ({delivered / deliver_s:.0f} messages/s, server"
            f" {cpu_deliver / max(1e-9, t_drained - t_presence) * 100:.0f}% of a core; worst"
            f" probe round trip {ms(stall_deliver)}; {load_deliver})"
        )
        print(
            f"delivered: {delivered} of {sent}; lost = sent - delivered = {lost}; duplicates"
            f" {duplicates}; to the wrong recipient {misrouted}; without a delay stamp"
            f" {undelayed}; error stanzas at the recipients {rcpt_errors}"
            f" ({received} message stanzas counted in all)"
        )
        print(
            f"left in the offline store after delivery: {left}"
            f" ({emptied:.1f}s after the last delivery); after a second restart the"
            f" recipients signed in again and got {again} messages a second time"
            f" (store then: {again_left})"
        )
        print(
            f"server RSS: {rss_stored / 1024:.1f} MB after storing,"
            f" {rss_restarted / 1024:.1f} MB after the restart,"
            f" {rss_delivered / 1024:.1f} MB after delivery"
        )
        print(flush=True)
        clean = bounces == 0 and lost == 0 and duplicates == 0 and misrouted == 0
        return ok and clean and undelayed == 0 and left == 0
    finally:
        try:
            run.close()
        finally:
            server.stop()


def expect_login(conn: Connection, n: int) -> bool:
    conn.send(("login",))
    r = expect(conn, "logged_in", 600)
    for err in r[3]:
        print(f"  login failure: {err}")
    return bool(r[1] == n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["rooms", "offline", "both"], default="both")
    g = ap.add_argument_group("rooms")
    g.add_argument("--rooms", type=int, default=50)
    g.add_argument("--occupants", type=int, default=20, help="occupants per room")
    g.add_argument("--seconds", type=float, default=20, help="how long the occupants talk")
    g.add_argument("--rate", type=float, default=0.5, help="lines per occupant per second (steady)")
    g.add_argument(
        "--drain", type=float, default=120, help="most seconds to wait for late deliveries"
    )
    g = ap.add_argument_group("offline")
    g.add_argument("--messages", type=int, default=100_000)
    g.add_argument(
        "--recipients",
        type=int,
        default=250,
        help=f"users who get them (messages / recipients must not pass the quota, {OFFLINE_QUOTA})",
    )
    g.add_argument("--senders", type=int, default=4, help="sender sessions")
    g.add_argument("--batch", type=int, default=50, help="messages per sender per round")
    g.add_argument(
        "--backlog", type=int, default=2000, help="most messages sent but not yet stored"
    )
    g.add_argument("--quiet", type=float, default=10, help="delivery ends after this long idle")
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--concurrency", type=int, default=50, help="logins in progress per worker")
    ap.add_argument(
        "--mechanism", choices=["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"], default="SCRAM-SHA-1"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (config, data, log)")
    args = ap.parse_args(argv)
    if args.rooms < 1 or args.occupants < 2 or args.rate <= 0 or args.seconds <= 0:
        ap.error("need --rooms >= 1, --occupants >= 2, --rate > 0 and --seconds > 0")
    if args.messages < 1 or args.recipients < 1 or args.senders < 1 or args.batch < 1:
        ap.error("--messages, --recipients, --senders and --batch must be at least 1")
    if args.messages % args.recipients:
        ap.error("--messages must be a multiple of --recipients (each gets the same number)")
    if args.messages // args.recipients > OFFLINE_QUOTA:
        ap.error(
            f"{args.messages // args.recipients} messages per recipient pass the server's"
            f" offline quota ({OFFLINE_QUOTA}); use more --recipients"
        )

    fds = raise_fd_limit()
    if args.rooms * args.occupants + 200 > fds:
        print(f"warning: fd limit {fds} is low for the sessions", file=sys.stderr)

    parts = ["rooms", "offline"] if args.part == "both" else [args.part]
    ok = True
    for part in parts:
        root = Path(tempfile.mkdtemp(prefix=f"se-conv-{part}-"))
        if args.keep:
            print(f"temp dir: {root}")
        t0 = time.monotonic()
        try:
            ok = (rooms_part if part == "rooms" else offline_part)(args, root) and ok
        except (RuntimeError, TimeoutError, OSError, sqlite3.Error) as e:
            ok = False
            print(f"benchmark failed ({part}): {e}", file=sys.stderr)
            log = root / "server.log"
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                print(f"--- server log ---\n{tail}", file=sys.stderr)
        finally:
            print(f"({part}: {time.monotonic() - t0:.0f}s in all)", flush=True)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
