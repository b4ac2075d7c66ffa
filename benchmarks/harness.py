"""What every load benchmark's coordinator does: client processes and their pipes, the answers
it waits for, the machine's CPU, and the figures it prints.

The client side (the lean XMPP client, the server under test, the probe) is in xmpp_sessions.py;
nothing here speaks XMPP.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

# -- client processes --------------------------------------------------------------------------


def _client_process(
    conn: Connection, target: Callable[..., Coroutine[Any, Any, None]], args: tuple[Any, ...]
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides when to stop
    asyncio.run(target(conn, *args))


class Workers:
    """The client processes of a run and their pipes; `close` asks each to quit and ends the
    ones that do not."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("fork")
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Connection] = []

    def start(self, target: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> Connection:
        """A process running `target(conn, *args)` on its own event loop; returns `conn`'s
        other end, on which the coordinator sends commands and reads the answers."""
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_client_process, args=(child, target, args), daemon=True)
        p.start()
        self.procs.append(p)
        self.conns.append(parent)
        return parent

    def quit(self, conns: list[Connection]) -> None:
        for c in conns:
            with contextlib.suppress(Exception):
                c.send(("quit",))
        for c in conns:
            with contextlib.suppress(Exception):
                expect(c, "bye", 10)

    def cpu_seconds(self) -> float:
        """CPU of the client processes and of this one."""
        me = os.times()
        return me.user + me.system + sum(process_cpu_seconds(p.pid) for p in self.procs if p.pid)

    def close(self) -> None:
        self.quit(self.conns)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)


def expect(conn: Connection, kind: str, timeout: float) -> tuple[Any, ...]:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {kind!r} from a worker within {timeout:.0f}s")
    msg = conn.recv()
    if msg[0] != kind:
        raise RuntimeError(f"worker said {msg!r}, expected {kind!r}")
    return msg


def gather(conns: list[Connection], cmd: tuple[Any, ...], kind: str, timeout: float) -> list[Any]:
    """Send `cmd` to every worker, then read each one's `kind` answer."""
    for c in conns:
        c.send(cmd)
    return [expect(c, kind, timeout) for c in conns]


def wait_received(conns: list[Connection], expected: int, until: float) -> int:
    """Poll the workers' `received` counts until `expected` arrived or the monotonic time
    `until` passed; returns how many arrived."""
    while True:
        received = sum(a[1] for a in gather(conns, ("received",), "received", 60))
        if received >= expected or time.monotonic() >= until:
            return received
        time.sleep(0.1)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Logged(Protocol):
    def log_tail(self, n: int = 20) -> str: ...


def report_failure(error: Exception, server: _Logged) -> int:
    """Say why the run stopped, with the end of the server's log; the exit status."""
    print(f"benchmark failed: {error}", file=sys.stderr)
    tail = server.log_tail()
    if tail:
        print(f"--- server log ---\n{tail}", file=sys.stderr)
    return 1


# -- the machine -------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU time all processors spent busy since boot (user, nice, system, irq, softirq, steal)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks[:3]) + sum(ticks[5:8])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- figures -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.1f} ms"  # nan: no sample in that window


def latency_summary(sorted_values: list[float]) -> str:
    """p50, p95, p99 and max of already sorted seconds, in milliseconds."""
    top = sorted_values[-1] if sorted_values else float("nan")
    return (
        f"p50 {ms(percentile(sorted_values, 50))}, p95 {ms(percentile(sorted_values, 95))},"
        f" p99 {ms(percentile(sorted_values, 99))}, max {ms(top)}"
    )


def stall_summary(
    samples: list[tuple[float, float]], start: float, end: float
) -> tuple[float, float]:
    """(worst, median) round trip of the probe pings in flight at some time in [start, end]."""
    rtts = [rtt for t, rtt in samples if t <= end and t + rtt >= start]
    return (max(rtts) if rtts else float("nan"), statistics.median(rtts) if rtts else float("nan"))
