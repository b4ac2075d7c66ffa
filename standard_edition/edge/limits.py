"""Rate limits and login lockout on the edge listeners (DESIGN §7), sans-I/O.

Failed logins are counted per origin (edge or internal), source address and account, so an
outsider guessing Dave's password slows down only that outsider: Dave on the LAN (another
origin) or at home (another address) is not locked out. Past a few free failures each further
attempt must wait twice as long as the one before (exponential backoff, capped); a success
clears that account's record for the address. Attempts from an address that fails on many
accounts are slowed the same way (password spraying). The clock is injected, for tests.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_RECORDS = 100_000  # failure records kept; the oldest go first (memory stays bounded)


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_connections_per_address: int = 20  # open at once from one address
    connections_per_minute: int = 60  # new connections from one address in any 60 s
    auth_failures_free: int = 5  # failed logins per account and address before backoff
    address_failures_free: int = 30  # failed logins per address, any account, before backoff
    auth_backoff: float = 2.0  # seconds of the first wait; each further failure doubles it
    auth_backoff_max: float = 900.0  # the longest wait
    stanzas_per_second: int = 50  # per edge session, with bursts of five times that
    # per partner connection (an inbound s2s stream, a SIP federation connection), bursts 5x
    federation_stanzas_per_second: int = 200


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class EdgeGuard:
    def __init__(self, limits: EdgeLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self._open: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._failures: OrderedDict[tuple[str, str, str], _Failures] = OrderedDict()
        self.counters = {
            "connections": 0,
            "connections_refused": 0,
            "auth_failures": 0,
            "auth_refused": 0,
            "outside_access_refused": 0,
            "stanza_rate_exceeded": 0,
            "federation_rate_exceeded": 0,
        }

    # -- connections ---------------------------------------------------------------------------

    def connection_opened(self, address: str) -> bool:
        """False: refuse this connection (too many open, or opened too fast)."""
        now = self.clock()
        recent = self._recent.setdefault(address, deque())
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if (
            self._open.get(address, 0) >= self.limits.max_connections_per_address
            or len(recent) >= self.limits.connections_per_minute
        ):
            self.counters["connections_refused"] += 1
            if not recent:
                del self._recent[address]
            return False
        recent.append(now)
        self._open[address] = self._open.get(address, 0) + 1
        self.counters["connections"] += 1
        if len(self._recent) > MAX_RECORDS:
            self._prune_recent(now)
        return True

    def connection_closed(self, address: str) -> None:
        n = self._open.get(address, 0) - 1
        if n > 0:
            self._open[address] = n
        else:
            self._open.pop(address, None)

    def _prune_recent(self, now: float) -> None:
        for addr in [a for a, q in self._recent.items() if not q or q[-1] <= now - 60.0]:
            del self._recent[addr]

    # -- logins --------------------------------------------------------------------------------

    def _wait(self, key: tuple[str, str, str], free: int) -> float:
        rec = self._failures.get(key)
        if rec is None or rec.count < free:
            return 0.0
        delay = min(
            self.limits.auth_backoff * 2 ** (rec.count - free), self.limits.auth_backoff_max
        )
        return max(0.0, rec.last + delay - self.clock())

    def login_wait(self, origin: str, address: str, account: str | None) -> float:
        """Seconds before a login from this address (for this account) may be tried; 0: now."""
        wait = self._wait((origin, address, ""), self.limits.address_failures_free)
        if account:
            wait = max(wait, self._wait((origin, address, account), self.limits.auth_failures_free))
        return wait

    def login_refused(self) -> None:
        self.counters["auth_refused"] += 1

    def login_failed(self, origin: str, address: str, account: str | None) -> None:
        self.counters["auth_failures"] += 1
        now = self.clock()
        keys = [(origin, address, "")]
        if account:
            keys.append((origin, address, account))
        for key in keys:
            rec = self._failures.pop(key, None) or _Failures(0, now)
            rec.count += 1
            rec.last = now
            self._failures[key] = rec  # most recent last
        while len(self._failures) > MAX_RECORDS:
            self._failures.popitem(last=False)

    def login_succeeded(self, origin: str, address: str, account: str) -> None:
        self._failures.pop((origin, address, account), None)

    def locked(self) -> int:
        """How many (address, account) pairs must wait now."""
        free = self.limits.auth_failures_free
        return sum(1 for k in self._failures if k[2] and self._wait(k, free) > 0)

    def status(self) -> dict[str, Any]:
        return {
            **self.counters,
            "open_connections": sum(self._open.values()),
            "addresses": len(self._open),
            "locked": self.locked(),
            "limits": {k: getattr(self.limits, k) for k in EdgeLimits.__dataclass_fields__},
        }


class TokenBucket:
    """Stanzas per second for one session: `rate` a second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def wait(self) -> float:
        """Seconds until take() can succeed again."""
        return max(0.0, (1.0 - self.tokens) / self.rate)
