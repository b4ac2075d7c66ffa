"""Messages per second and latency across one XMPP s2s link between two real servers.

Starts two servers (a.test with its edge on 127.0.0.2, b.test on 127.0.0.3, each allowing the
other, found through [federation.hosts]), logs one sender in on a.test and one receiver on
b.test with a lean raw client, then sends N chat messages with a window W in flight. Each body
carries its send time, so the receiver measures end-to-end latency: client -> a.test c2s ->
router -> s2s (TLS, dialback) -> b.test s2s -> router -> c2s -> client.

    python benchmarks/s2s.py --messages 20000 --window 200

Prints messages/s and p50/p99/max latency. Loopback only; stops the servers it started.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.rawxmpp import login
from tests.integration.server import Server, free_port

BODY = re.compile(rb"<body>(\d+) ([0-9.]+)</body>")


def federation(other: str, host: str, port: int) -> str:
    return (
        f'[federation]\nallow = ["{other}"]\n'
        f'[federation.hosts]\n"{other}" = {{ xmpp = "{host}:{port}" }}\n'
    )


async def measure(a: Server, b: Server, n: int, window: int) -> dict[str, float]:
    sender = await login(a.ports["c2s"], "a.test", "sender", a.passwords["sender"], "bench")
    receiver = await login(b.ports["c2s"], "b.test", "erin", b.passwords["erin"], "bench")
    to = "erin@b.test/bench"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=200, help="messages in flight")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="s2s-bench-"))
    pa, pb = free_port(), free_port()
    limits = "stanzas_per_second = 100000\n"
    a = Server(
        root / "a",
        federation("b.test", "127.0.0.3", pb),
        domain="a.test",
        edge_host="127.0.0.2",
        edge_ports={"s2s": pa},
        edge_extra=limits,
    )
    b = Server(
        root / "b",
        federation("a.test", "127.0.0.2", pa),
        domain="b.test",
        edge_host="127.0.0.3",
        edge_ports={"s2s": pb},
        edge_extra=limits,
    )
    try:
        a.start()
        b.start()
        a.add_user("sender")
        b.add_user("erin")
        r = asyncio.run(measure(a, b, args.messages, args.window))
    finally:
        a.stop()
        b.stop()
    print(
        f"s2s a.test -> b.test: {r['messages']} messages in {r['seconds']:.2f}s = "
        f"{r['per_second']:.0f} msg/s; latency p50 {r['p50_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (window {args.window})"
    )


if __name__ == "__main__":
    main()
