"""Messages per second and latency across one XMPP s2s link: to another SE Appliance, and to
a real Prosody (Debian's package), in one run so the two figures compare.

Link 1: two servers, a.test (edge on 127.0.0.2) and b.test (127.0.0.3), each allowing the
other, found through [federation.hosts]. Link 2: a fresh a.test and Prosody's b.test on
127.0.0.3, which finds a.test through a small DNS server (tests/integration/prosody.py, the
interop tests' setup). On each link one sender logs in on a.test and one receiver on b.test
with a lean raw client, then N chat messages go with a window W in flight. Each body carries
its send time, so the receiver measures end-to-end latency: client -> a.test c2s -> router ->
s2s (TLS, dialback) -> b.test s2s -> router -> c2s -> client.

    python benchmarks/s2s.py --messages 20000 --window 200
    python benchmarks/s2s.py --no-prosody

Prints messages/s and p50/p99/max latency per link, and the ratio. Loopback only; stops the
servers it started. Without prosody (or lua-unbound) the second link is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.prosody import (
    DNS,
    Prosody,
    ProsodyUnavailable,
    federation_toml,
    records,
    unavailable,
)
from tests.integration.rawxmpp import login
from tests.integration.server import PASSWORD, Server, free_port

BODY = re.compile(rb"<body>(\d+) ([0-9.]+)</body>")
# the edge's per-session and per-partner rate limits are not what we measure
LIMITS = "stanzas_per_second = 100000\nfederation_stanzas_per_second = 1000000\n"
A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"


@dataclass(frozen=True, slots=True)
class Account:
    host: str
    port: int
    domain: str
    user: str
    password: str


def federation(other: str, host: str, port: int) -> str:
    return (
        f'[federation]\nallow = ["{other}"]\n'
        f'[federation.hosts]\n"{other}" = {{ xmpp = "{host}:{port}" }}\n'
    )


async def measure(src: Account, dst: Account, n: int, window: int) -> dict[str, float]:
    sender = await login(src.port, src.domain, src.user, src.password, "bench", src.host)
    receiver = await login(dst.port, dst.domain, dst.user, dst.password, "bench", dst.host)
    to = f"{dst.user}@{dst.domain}/bench"
    # warm up: the first message brings the s2s streams up (TLS and dialback both ways)
    sender.send(
        f"<message to='{to}' type='chat'><body>0 {time.perf_counter()}</body></message>".encode()
    )
    await receiver.until(b"</message>", 30)
    receiver.buf = b""
    latencies: list[float] = []
    credit = asyncio.Semaphore(window)

    async def send() -> None:
        for i in range(1, n + 1):
            await credit.acquire()
            sender.send(
                f"<message to='{to}' type='chat'><body>{i} {time.perf_counter()}</body>"
                "</message>".encode()
            )
            if i % 50 == 0:
                await sender.w.drain()
        await sender.w.drain()

    async def receive() -> None:
        while len(latencies) < n:
            chunk = await asyncio.wait_for(receiver.r.read(65536), 30)
            if not chunk:
                raise ConnectionError("the receiver's stream closed")
            receiver.buf += chunk
            now = time.perf_counter()
            found = BODY.findall(receiver.buf)
            if found:
                receiver.buf = receiver.buf[receiver.buf.rfind(b"</message>") + 10 :]
            for _, sent in found:
                latencies.append(now - float(sent))
                credit.release()

    started = time.perf_counter()
    await asyncio.gather(send(), receive())
    took = time.perf_counter() - started
    sender.close()
    receiver.close()
    latencies.sort()
    return {
        "messages": n,
        "seconds": took,
        "per_second": n / took,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def appliance(root: Path, domain: str, host: str, s2s_port: int, federation: str) -> Server:
    """An SE Appliance serving `domain`, its edge's s2s on host:s2s_port."""
    return Server(
        root,
        federation,
        domain=domain,
        edge_host=host,
        edge_ports={"s2s": s2s_port},
        edge_extra=LIMITS,
    )


def two_appliances(root: Path, n: int, window: int) -> dict[str, float]:
    pa, pb = free_port(), free_port()
    a = appliance(root / "a", "a.test", A_HOST, pa, federation("b.test", B_HOST, pb))
    b = appliance(root / "b", "b.test", B_HOST, pb, federation("a.test", A_HOST, pa))
    try:
        a.start()
        b.start()
        a.add_user("sender")
        b.add_user("erin")
        src = Account("127.0.0.1", a.ports["c2s"], "a.test", "sender", PASSWORD)
        dst = Account("127.0.0.1", b.ports["c2s"], "b.test", "erin", PASSWORD)
        return asyncio.run(measure(src, dst, n, window))
    finally:
        a.stop()
        b.stop()


def with_prosody(root: Path, n: int, window: int) -> dict[str, float]:
    pa, pp = free_port(), free_port()
    root.mkdir(parents=True, exist_ok=True)
    dns = DNS(records(pa, pp), root / "dns.log")
    prosody = Prosody(root / "prosody", dns.port, pp)
    a = appliance(root / "a-prosody", "a.test", A_HOST, pa, federation_toml(pp))
    try:
        a.start()
        prosody.start()
        a.add_user("sender")
        prosody.add_user("erin")
        src = Account("127.0.0.1", a.ports["c2s"], "a.test", "sender", PASSWORD)
        dst = Account(B_HOST, prosody.ports["c2s"], "b.test", "erin", PASSWORD)
        return asyncio.run(measure(src, dst, n, window))
    finally:
        a.stop()
        prosody.stop()
        dns.stop()


def line(name: str, r: dict[str, float], window: int) -> str:
    return (
        f"s2s {name}: {r['messages']:.0f} messages in {r['seconds']:.2f}s = "
        f"{r['per_second']:.0f} msg/s; latency p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (window {window})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=200, help="messages in flight")
    parser.add_argument("--no-prosody", action="store_true", help="only the two-appliance link")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="s2s-bench-"))
    ours = two_appliances(root / "pair", args.messages, args.window)
    print(line("a.test -> b.test (SE Appliance)", ours, args.window), flush=True)
    if args.no_prosody:
        return
    why = unavailable()
    if why is None:
        try:
            theirs = with_prosody(root / "prosody", args.messages, args.window)
        except ProsodyUnavailable as e:
            why = str(e)
    if why is not None:
        print(f"s2s a.test -> b.test (Prosody): skipped: {why}")
        return
    print(line("a.test -> b.test (Prosody)", theirs, args.window))
    print(
        f"ratio Prosody/SE Appliance: throughput {theirs['per_second'] / ours['per_second']:.2f}"
        f", p99 latency {theirs['p99_ms'] / ours['p99_ms']:.2f}"
    )


if __name__ == "__main__":
    main()
