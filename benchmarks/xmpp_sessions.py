"""How many XMPP sessions the server holds, what each costs, and how fast it routes messages.

Starts the real server (`se-appliance --config FILE`, its own temp data dir, free loopback ports),
creates users with `se-ctl`, logs in N concurrent sessions over STARTTLS + SCRAM-SHA-1 (or PLAIN)
with a lean raw-XML asyncio client spread over several worker processes (so the client is not the
bottleneck), then ping-pongs messages between P pairs of sessions with a window of messages in
flight each way. A probe session pings the server every 100 ms throughout: its worst round trip
is the worst reactor stall a user would have felt.

    python benchmarks/xmpp_sessions.py --sessions 1000 --pairs 200 --seconds 10

Prints: sessions held (answering ping), server RSS per session, logins/s, messages/s and the worst
stall. Loopback only; stops by itself; kills only the server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from harness import Workers, expect, raise_fd_limit, report_failure, stall_summary

DOMAIN = "example.test"
PASSWORD = "Bench-Mark-2024"
FEATURES = re.compile(rb"<stream:features\b.*?</stream:features>|<stream:features\b[^>]*/>", re.S)
SASL_REPLY = re.compile(
    rb"<(challenge|success|failure)\b[^>]*/>|<(challenge|success|failure)\b[^>]*>(.*?)</\2>", re.S
)


# -- the lean client ---------------------------------------------------------------------------


def header() -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    ).encode()


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """One context per process: making one loads the system CA store, which costs ~20 ms."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the server's certificate is self-signed
    return ctx


_salted_cache: dict[tuple[str, str, bytes, int], bytes] = {}


def scram_final(user: str, hash_name: str, cnonce: str, server_first: bytes) -> tuple[bytes, bytes]:
    """RFC 5802 client-final-message and the expected server signature.

    The salted password is cached per (user, salt, iterations), as clients that store it do."""
    digest = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256}[hash_name]
    attrs = dict(part.split("=", 1) for part in server_first.decode().split(","))
    nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    if not nonce.startswith(cnonce):
        raise ConnectionError("server nonce does not extend ours")
    key = (user, hash_name, salt, iters)
    salted = _salted_cache.get(key)
    if salted is None:
        salted = hashlib.pbkdf2_hmac(digest().name, PASSWORD.encode(), salt, iters)
        _salted_cache[key] = salted
    client_key = hmac.digest(salted, b"Client Key", digest)
    stored_key = digest(client_key).digest()
    final_bare = f"c=biws,r={nonce}"
    auth_msg = f"n={user},r={cnonce},{server_first.decode()},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_msg, digest)
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_sig = hmac.digest(hmac.digest(salted, b"Server Key", digest), auth_msg, digest)
    return f"{final_bare},p={base64.b64encode(proof).decode()}".encode(), server_sig


class Session:
    # the stanza ends a read is cut after: what comes before goes to on_stanzas, the rest waits
    ENDS: tuple[bytes, ...] = (b"</message>",)

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, jid: str):
        self.r, self.w, self.jid, self.buf = r, w, jid, b""
        self.index = -1  # the benchmark's number for this session
        # after login
        self.partner_msg = b""
        self.replying = False
        self.delivered = 0
        self.errors = 0
        self.dead = False
        self.waiting_ping: tuple[tuple[bytes, bytes], asyncio.Future[None]] | None = None
        self.reader: asyncio.Task[None] | None = None

    async def until(
        self, pattern: re.Pattern[bytes] | bytes, timeout: float = 60
    ) -> re.Match[bytes] | bytes:
        end = time.monotonic() + timeout
        while True:
            if isinstance(pattern, bytes):
                i = self.buf.find(pattern)
                if i >= 0:
                    out, self.buf = self.buf[: i + len(pattern)], self.buf[i + len(pattern) :]
                    return out
            else:
                m = pattern.search(self.buf)
                if m:
                    self.buf = self.buf[m.end() :]
                    return m
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.jid}: waited for {pattern!r}; have {self.buf[-200:]!r}")
            chunk = await asyncio.wait_for(self.r.read(65536), left)
            if not chunk:
                raise ConnectionError(f"{self.jid}: closed: {self.buf[-300:]!r}")
            self.buf += chunk

    # after login one task per session reads everything: stanzas, ping answers, errors
    async def read_loop(self) -> None:
        try:
            while True:
                chunk = await self.r.read(65536)
                if not chunk:
                    break
                now = time.monotonic()
                buf = self.buf + chunk
                cut = max((i + len(e) for e in self.ENDS if (i := buf.rfind(e)) >= 0), default=0)
                done, self.buf = buf[:cut], buf[cut:]
                if done:
                    self.on_stanzas(done, now)
                if self.waiting_ping is not None:
                    (m1, m2), fut = self.waiting_ping
                    if m1 in done or m1 in self.buf or m2 in done or m2 in self.buf:
                        self.waiting_ping = None
                        if not fut.done():
                            fut.set_result(None)
                if b"<stream:error" in self.buf or b"</stream:stream>" in self.buf:
                    break
                if len(self.buf) > 1 << 20:
                    self.buf = self.buf[-4096:]  # stanzas past ENDS that we do not look at
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.dead = True
            self.on_closed()
            if self.waiting_ping is not None and not self.waiting_ping[1].done():
                self.waiting_ping[1].set_exception(ConnectionError("closed"))

    def on_stanzas(self, done: bytes, now: float) -> None:
        """Whole stanzas up to one of ENDS, read at monotonic time `now`: here, messages of the
        ping-pong, each answered with one to the partner."""
        n = done.count(b"</message>")
        bad = done.count(b"type='error'") + done.count(b'type="error"')
        self.errors += bad
        if self.replying and n - bad > 0:
            self.delivered += n - bad
            self.w.write(self.partner_msg * (n - bad))

    def on_closed(self) -> None:
        """The stream ended; the read loop stops."""

    async def ping(self, ident: str, timeout: float) -> bool:
        if self.dead:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting_ping = ((f"id='{ident}'".encode(), f'id="{ident}"'.encode()), fut)
        self.w.write(f"<iq type='get' id='{ident}'><ping xmlns='urn:xmpp:ping'/></iq>".encode())
        try:
            await asyncio.wait_for(fut, timeout)
        except (TimeoutError, ConnectionError, OSError):
            return False
        return True


SessionT = TypeVar("SessionT", bound=Session)


async def login(
    port: int, user: str, resource: str, mechanism: str, session_class: type[Session] = Session
) -> Session:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    s = session_class(r, w, f"{user}@{DOMAIN}/{resource}")
    try:
        w.write(header())
        await s.until(FEATURES)
        w.write(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        m = await s.until(re.compile(rb"<(proceed|failure)\b[^>]*(/>|>\s*</\1>)"))
        assert isinstance(m, re.Match)
        if m.group(1) != b"proceed":
            raise ConnectionError(f"{user}: STARTTLS refused")
        s.buf = b""
        await w.start_tls(client_tls_context(), server_hostname=DOMAIN)
        w.write(header())
        await s.until(FEATURES)
        sasl = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>"
        if mechanism == "PLAIN":
            tok = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
            w.write(sasl.format("PLAIN", tok).encode())
            m = await s.until(SASL_REPLY)
            assert isinstance(m, re.Match)
            if (m.group(1) or m.group(2)) != b"success":
                raise ConnectionError(f"{user}: PLAIN refused: {m.group(0)!r}")
        else:
            hash_name = mechanism.removeprefix("SCRAM-")
            cnonce = secrets.token_urlsafe(18)
            first = f"n,,n={user},r={cnonce}".encode()
            w.write(sasl.format(mechanism, base64.b64encode(first).decode()).encode())
            m = await s.until(SASL_REPLY)
            assert isinstance(m, re.Match)
            if (m.group(1) or m.group(2)) != b"challenge":
                raise ConnectionError(f"{user}: SCRAM refused: {m.group(0)!r}")
            final, server_sig = scram_final(user, hash_name, cnonce, base64.b64decode(m.group(3)))
            w.write(
                b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                + base64.b64encode(final)
                + b"</response>"
            )
            m = await s.until(SASL_REPLY)
            assert isinstance(m, re.Match)
            if (m.group(1) or m.group(2)) != b"success":
                raise ConnectionError(f"{user}: SCRAM refused: {m.group(0)!r}")
            v = base64.b64decode(m.group(3) or b"").decode()
            if not hmac.compare_digest(base64.b64decode(v.removeprefix("v=")), server_sig):
                raise ConnectionError(f"{user}: wrong server signature")
        s.buf = b""
        w.write(header())
        await s.until(FEATURES)
        w.write(
            b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            + f"<resource>{resource}</resource></bind></iq>".encode()
        )
        got = await s.until(b"</iq>")
        assert isinstance(got, bytes)
        jid = re.search(rb"<jid>([^<]+)</jid>", got)
        if not jid:
            raise ConnectionError(f"{user}: bind failed: {got!r}")
        s.jid = jid.group(1).decode()
    except BaseException:
        w.close()
        raise
    return s


# -- worker processes --------------------------------------------------------------------------


@dataclass
class WorkerPlan:
    port: int
    mechanism: str
    concurrency: int
    sessions: list[tuple[str, str]]  # (user, resource)
    pairs: int  # message pairs among this worker's own sessions
    presence: bool = False


async def login_many(
    port: int,
    mechanism: str,
    concurrency: int,
    accounts: Iterable[tuple[int, str, str]],
    session_class: type[SessionT],
    presence: bytes | None = None,
) -> tuple[list[SessionT], list[str]]:
    """Log in each (index, user, resource), at most `concurrency` at a time; each session's
    read loop starts and it sends `presence` right away, as a client does. Returns the
    sessions in the order they came up, and the failures."""
    sem = asyncio.Semaphore(concurrency)
    sessions: list[SessionT] = []
    failures: list[str] = []

    async def one(index: int, user: str, res: str) -> None:
        async with sem:
            try:
                s = await asyncio.wait_for(login(port, user, res, mechanism, session_class), 120)
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError, AssertionError) as e:
                failures.append(f"{user}: {type(e).__name__}: {e}"[:300])
                return
            assert isinstance(s, session_class)
            s.index = index
            sessions.append(s)
            s.reader = asyncio.create_task(s.read_loop())
            if presence is not None:
                s.w.write(presence)

    await asyncio.gather(*(one(*account) for account in accounts))
    return sessions, failures


async def answering(sessions: Iterable[SessionT], tag: str, timeout: float) -> list[SessionT]:
    """The sessions that answer a ping within `timeout`, all pinged at once."""
    live = list(sessions)
    ok = await asyncio.gather(*(s.ping(f"alive-{tag}", timeout) for s in live))
    return [s for s, good in zip(live, ok, strict=True) if good]


def close_sessions(conn: Connection, sessions: Iterable[Session]) -> None:
    """A worker's `quit`: every stream closed, then `bye` to the coordinator."""
    for s in sessions:
        with contextlib.suppress(Exception):
            s.w.close()
    conn.send(("bye",))


async def worker_async(conn: Connection, plan: WorkerPlan) -> None:
    loop = asyncio.get_running_loop()
    sessions: list[Session] = []

    async def recv() -> Any:
        return await loop.run_in_executor(None, conn.recv)

    while True:
        cmd = await recv()
        if cmd[0] == "login":
            t0 = time.monotonic()
            accounts = [(i, user, res) for i, (user, res) in enumerate(plan.sessions)]
            presence = b"<presence/>" if plan.presence else None
            new, failures = await login_many(
                plan.port, plan.mechanism, plan.concurrency, accounts, Session, presence
            )
            sessions += new
            conn.send(
                ("logged_in", len(sessions), len(failures), failures[:3], t0, time.monotonic())
            )
        elif cmd[0] == "ping":
            conn.send(("alive", len(await answering(sessions, cmd[2], cmd[1]))))
        elif cmd[0] == "pingpong":
            seconds, window = cmd[1], cmd[2]
            live = [s for s in sessions if not s.dead]
            pairs = [
                (live[i], live[i + 1]) for i in range(0, min(len(live) - 1, 2 * plan.pairs), 2)
            ]
            body = b"<body>load</body></message>"
            for a, b in pairs:
                a.partner_msg = f"<message type='chat' to='{b.jid}'>".encode() + body
                b.partner_msg = f"<message type='chat' to='{a.jid}'>".encode() + body
                a.delivered = b.delivered = a.errors = b.errors = 0
                a.replying = b.replying = True
            t0 = time.monotonic()
            for a, b in pairs:
                a.w.write(a.partner_msg * window)
                b.w.write(b.partner_msg * window)
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            delivered = sum(s.delivered for p in pairs for s in p)
            errors = sum(s.errors for p in pairs for s in p)
            for a, b in pairs:
                a.replying = b.replying = False
            await asyncio.sleep(0.5)  # let the messages in flight land before the next ping
            conn.send(("delivered", delivered, errors, elapsed, len(pairs)))
        elif cmd[0] == "quit":
            close_sessions(conn, sessions)
            return


def start_workers(workers: Workers, n: int, whole: WorkerPlan) -> list[Connection]:
    """`whole` shared by n client processes: worker w takes every n-th session from w and its
    share of the pairs."""
    return [
        workers.start(
            worker_async,
            dataclasses.replace(
                whole,
                sessions=whole.sessions[w::n],
                pairs=whole.pairs // n + (w < whole.pairs % n),
            ),
        )
        for w in range(n)
    ]


async def probe_async(conn: Connection, port: int, mechanism: str, user: str) -> None:
    """One session pinging the server every 100 ms; each round trip is recorded."""
    loop = asyncio.get_running_loop()
    s = await login(port, user, "probe", mechanism)
    s.reader = asyncio.create_task(s.read_loop())
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def pinger() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            t0 = time.monotonic()
            ok = await s.ping(f"probe{n}", 10)
            rtt = time.monotonic() - t0 if ok else 10.0
            samples.append((t0, rtt))
            await asyncio.sleep(max(0.0, 0.1 - rtt))

    task = asyncio.create_task(pinger())
    conn.send(("ready",))
    await loop.run_in_executor(None, conn.recv)
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 11)
    conn.send(("samples", samples))
    s.w.close()


def start_probe(workers: Workers, port: int, mechanism: str, user: str) -> Connection:
    """The probe in a process of its own, pinging once it has signed in."""
    conn = workers.start(probe_async, port, mechanism, user)
    expect(conn, "ready", 60)
    return conn


def stop_probe(conn: Connection) -> list[tuple[float, float]]:
    """Stop the probe; its (send time, round trip) samples."""
    conn.send(("stop",))
    samples: list[tuple[float, float]] = expect(conn, "samples", 30)[1]
    return samples


# -- the server under test ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} not found: install the project (pip install -e .) first")
    return found


@dataclass
class ServerUnderTest:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def start(self) -> None:
        self.ports = {"c2s": free_port(), "c2s_tls": free_port()}
        self.config.write_text(
            f'domain = "{DOMAIN}"\ndata_dir = "{self.root / "data"}"\n'
            f'[listen]\nc2s = ["127.0.0.1:{self.ports["c2s"]}"]\n'
            f'c2s_tls = ["127.0.0.1:{self.ports["c2s_tls"]}"]\nsip = []\nsip_tls = []\n'
        )
        log = (self.root / "server.log").open("ab")
        env = {k: v for k, v in os.environ.items() if k != "SE_CONFIG"}
        self.proc = subprocess.Popen(
            [executable("se-appliance"), "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        end = time.monotonic() + 60
        while self.ctl("status").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the server did not start; log:\n{self.log_tail()}")
            time.sleep(0.2)

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SE_CONFIG"}
        return subprocess.run(
            [executable("se-ctl"), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    def add_user(self, user: str) -> None:
        pw = self.root / f"pw-{user}"
        pw.write_text(PASSWORD + "\n")
        r = self.ctl("user", "add", f"{user}@{DOMAIN}", "--password-file", str(pw))
        if r.returncode != 0:
            raise RuntimeError(f"se-ctl user add {user}: {r.stderr.strip()}")

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used (all its threads)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def routed_messages(self) -> int | None:
        """The server's own message counter (se-ctl status --json), when it keeps one."""
        r = self.ctl("status", "--json")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(r.stdout)["counters"]["messages"])
        return None

    def log_tail(self, n: int = 20) -> str:
        path = self.root / "server.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def bench_server(prefix: str, keep: bool) -> Iterator[tuple[ServerUnderTest, Workers]]:
    """A server under test in a temp dir of its own, and the run's client processes; on the way
    out the clients quit, the server stops and the dir goes (unless `keep`)."""
    server = ServerUnderTest(Path(tempfile.mkdtemp(prefix=prefix)))
    workers = Workers()
    try:
        yield server, workers
    finally:
        workers.close()
        server.stop()
        if keep:
            print(f"kept {server.root}")
        else:
            shutil.rmtree(server.root, ignore_errors=True)


# -- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1000, help="concurrent sessions (N)")
    ap.add_argument("--pairs", type=int, default=200, help="session pairs exchanging messages")
    ap.add_argument("--seconds", type=float, default=10, help="length of the message phase")
    ap.add_argument(
        "--users", type=int, default=100, help="accounts; sessions spread over resources"
    )
    ap.add_argument("--window", type=int, default=10, help="messages in flight each way per pair")
    ap.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2))
    ap.add_argument("--concurrency", type=int, default=50, help="logins in progress per worker")
    ap.add_argument(
        "--mechanism", choices=["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"], default="SCRAM-SHA-1"
    )
    ap.add_argument("--presence", action="store_true", help="send initial presence on each session")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (config, data, log)")
    args = ap.parse_args(argv)
    if args.sessions < 2 or args.pairs < 0 or args.pairs * 2 > args.sessions:
        ap.error("need --sessions >= 2 and --pairs <= sessions/2")

    fds = raise_fd_limit()
    per_worker = -(-args.sessions // args.workers)
    if per_worker + 100 > fds or args.sessions + 100 > fds:
        print(f"warning: fd limit {fds} is low for {args.sessions} sessions", file=sys.stderr)

    with bench_server("se-bench-", args.keep) as (server, workers):
        try:
            server.start()
            print(
                f"server up on 127.0.0.1:{server.ports['c2s']} (pid {server.proc.pid});"
                f" {server.root}"
            )
            users = [f"bench{i}" for i in range(args.users)]
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(server.add_user, [*users, "probe"]))
            print(f"{len(users) + 1} users created with se-ctl in {time.monotonic() - t0:.1f}s")

            probe_conn = start_probe(workers, server.ports["c2s"], args.mechanism, "probe")
            time.sleep(1.0)
            rss0 = server.rss_kb()

            # sessions i -> user i % users, resource r<i>; worker w gets every w-th slice
            plan_sessions = [(users[i % len(users)], f"r{i}") for i in range(args.sessions)]
            conns = start_workers(
                workers,
                args.workers,
                WorkerPlan(
                    server.ports["c2s"],
                    args.mechanism,
                    args.concurrency,
                    plan_sessions,
                    args.pairs,
                    args.presence,
                ),
            )

            cpu0 = server.cpu_seconds()
            t_login = time.monotonic()
            for c in conns:
                c.send(("login",))
            results = [expect(c, "logged_in", 600) for c in conns]
            t_login_end = max(r[5] for r in results)
            logged_in = sum(r[1] for r in results)
            failed = sum(r[2] for r in results)
            login_s = t_login_end - t_login
            for r in results:
                for err in r[3]:
                    print(f"  login failure: {err}")
            cpu_login = server.cpu_seconds() - cpu0
            time.sleep(1.0)
            rss1 = server.rss_kb()

            t_ping = time.monotonic()
            for c in conns:
                c.send(("ping", 30, "a"))
            alive = sum(expect(c, "alive", 120)[1] for c in conns)
            t_ping_end = time.monotonic()
            time.sleep(2.0)  # all sessions held, nothing said: timers and housekeeping only
            t_idle_end = time.monotonic()

            counted0 = server.routed_messages()
            cpu0 = server.cpu_seconds()
            t_msg = time.monotonic()
            for c in conns:
                c.send(("pingpong", args.seconds, args.window))
            msg_results = [expect(c, "delivered", args.seconds + 120) for c in conns]
            t_msg_end = time.monotonic()
            cpu_msg = server.cpu_seconds() - cpu0
            counted1 = server.routed_messages()
            delivered = sum(r[1] for r in msg_results)
            errors = sum(r[2] for r in msg_results)
            elapsed = max(r[3] for r in msg_results)
            pairs_run = sum(r[4] for r in msg_results)

            for c in conns:
                c.send(("ping", 30, "b"))
            alive_after = sum(expect(c, "alive", 120)[1] for c in conns)

            samples = stop_probe(probe_conn)
            rss2 = server.rss_kb()

            worst_all, median_all = stall_summary(samples, 0, float("inf"))
            worst_login, _ = stall_summary(samples, t_login, t_login_end)
            worst_msg, _ = stall_summary(samples, t_msg, t_msg_end)
            worst_ping, _ = stall_summary(samples, t_ping, t_ping_end)
            worst_idle, _ = stall_summary(samples, t_ping_end, t_idle_end)
            per_session = (rss1 - rss0) / max(1, logged_in)

            print()
            print(
                f"sessions held (answering ping): {alive}/{args.sessions}"
                f" ({failed} logins failed; {alive_after} still answering after messaging)"
            )
            print(
                f"server RSS: {rss0 / 1024:.1f} MB idle, {rss1 / 1024:.1f} MB with {logged_in}"
                f" sessions, {rss2 / 1024:.1f} MB after messaging"
            )
            print(f"server RSS per session: {per_session:.1f} KB")
            print(
                f"logins/s: {logged_in / login_s:.0f} ({logged_in} in {login_s:.1f}s,"
                f" {args.mechanism} over STARTTLS, {args.workers} client processes)"
            )
            print(
                f"messages/s: {delivered / elapsed:.0f} ({pairs_run} pairs, window {args.window},"
                f" {elapsed:.1f}s, {errors} error bounces)"
            )
            if counted0 is not None and counted1 is not None:
                print(f"  the server counted {counted1 - counted0} messages routed in that phase")
            print(
                f"server CPU: {cpu_login * 1000 / max(1, logged_in):.1f} ms per login,"
                f" {cpu_msg * 1e6 / max(1, delivered):.0f} us per message"
                f" ({cpu_msg / max(elapsed, 1e-9) * 100:.0f}% of a core while messaging)"
            )
            print(
                "worst reactor stall (max round trip of a ping every 100 ms):"
                f" {worst_all * 1000:.0f} ms"
                f" (median {median_all * 1000:.1f} ms; logins {worst_login * 1000:.0f} ms,"
                f" pinging all sessions at once {worst_ping * 1000:.0f} ms,"
                f" idle {worst_idle * 1000:.0f} ms, messaging {worst_msg * 1000:.0f} ms)"
            )
            ok = alive == args.sessions and failed == 0
            return 0 if ok else 1
        except (RuntimeError, TimeoutError) as e:
            return report_failure(e, server)


if __name__ == "__main__":
    sys.exit(main())
