"""SIP transactions (RFC 3261 §17), sans-I/O.

Each transaction is a small state machine. Its inputs are method calls (`receive`,
`send_response`, `timer_fired`, `transport_error`); its outputs are action values the
transport shell carries out: `Send` a message to the transaction's peer, `StartTimer` /
`CancelTimer`, `Deliver` a message to the transaction user (TU), `Timeout` for the TU, and
`Terminated` when the transaction is gone.

Timers follow RFC 3261 §17 and its Table 4. Over UDP all timers A-K run; over reliable
transports (TCP, TLS) the retransmission timers A, E and G never start, B, F and H still
do, and the wait timers D, I, J and K are zero, so the transaction ends at once.

`TransactionLayer` keeps the table of live transactions and matches incoming messages to
them (§17.1.3, §17.2.3): retransmitted requests are absorbed (and the last response sent
again), new requests and unmatched responses go to the TU. Only RFC 3261 branches (magic
cookie "z9hG4bK") are accepted; RFC 2543 peers get a 400.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

from standard_edition.sip.message import Headers, ParseError, Request, Response, make_response

__all__ = [
    "MAGIC_COOKIE",
    "Action",
    "CancelTimer",
    "ClientTransaction",
    "Deliver",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Send",
    "ServerTransaction",
    "StartTimer",
    "State",
    "Terminated",
    "Timeout",
    "Timers",
    "TransactionLayer",
    "make_ack",
    "new_branch",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7

Key: TypeAlias = tuple[str, ...]


def new_branch() -> str:
    """A branch unique in space and time (RFC 3261 §8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 and Table 4: T1 (RTT estimate), T2 (max retransmit), T4."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    message: Request | Response
    peer: Hashable


@dataclass(frozen=True, slots=True)
class StartTimer:
    key: Key
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: Key
    name: str


@dataclass(frozen=True, slots=True)
class Deliver:
    """A message for the TU; `transaction` is None for strays (2xx retransmissions, ACK)."""

    message: Request | Response
    transaction: Transaction | None
    peer: Hashable = None


@dataclass(frozen=True, slots=True)
class Timeout:
    """The transaction gave up (Timer B, F or H); the TU treats it as 408 (§8.1.3.1)."""

    key: Key
    timer: str


@dataclass(frozen=True, slots=True)
class Terminated:
    key: Key
    reason: str


Action: TypeAlias = Send | StartTimer | CancelTimer | Deliver | Timeout | Terminated


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# --------------------------------------------------------------------------- keys


def _branch(msg: Request | Response) -> str:
    """The top Via branch, refusing RFC 2543 transaction ids (RFC 4475 §3.2.1, §3.4.1)."""
    branch = msg.top_via.branch
    if branch is None or not branch.startswith(MAGIC_COOKIE):
        raise ParseError("RFC 2543 transaction identifiers are not supported")
    if branch == MAGIC_COOKIE:
        raise ParseError("missing transaction identifier in Via branch")
    return branch


def server_key(request: Request) -> Key:
    """RFC 3261 §17.2.3: branch, sent-by and method; an ACK matches its INVITE."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    port = str(via.port) if via.port is not None else ""
    return ("s", _branch(request), via.host, port, method)


def client_key(msg: Request | Response) -> Key:
    """RFC 3261 §17.1.3: branch and CSeq method."""
    return ("c", _branch(msg), msg.cseq.method)


# --------------------------------------------------------------------------- base


class _Transaction:
    __slots__ = ("key", "peer", "reliable", "request", "state", "timers")

    def __init__(
        self,
        request: Request,
        peer: Hashable,
        *,
        reliable: bool,
        timers: Timers,
        key: Key,
    ) -> None:
        self.request = request
        self.peer = peer
        self.reliable = reliable
        self.timers = timers
        self.key = key
        self.state = State.TRYING

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _start(self, name: str, seconds: float) -> StartTimer:
        return StartTimer(self.key, name, seconds)

    def _cancel(self, name: str) -> CancelTimer:
        return CancelTimer(self.key, name)

    def _terminate(self, reason: str) -> Terminated:
        self.state = State.TERMINATED
        return Terminated(self.key, reason)

    def _wait_or_end(self, name: str, seconds: float, reason: str) -> list[Action]:
        # RFC 3261 §17: D, I, J and K are zero on reliable transports
        if self.reliable or seconds <= 0:
            return [self._terminate(reason)]
        return [self._start(name, seconds)]

    def transport_error(self) -> list[Action]:
        """RFC 3261 §17.1.4 / §17.2.4: the TU is told and the transaction ends."""
        if self.terminated:
            return []
        return [self._terminate("transport error")]


# --------------------------------------------------------------------------- client


def make_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response, built by the transaction (RFC 3261 §17.1.1.3)."""
    h = Headers._trusted([])
    items = h._items
    items.append(("Via", request.headers.get("Via") or ""))
    for value in request.headers.get_all("Route"):
        items.append(("Route", value))
    for name in ("Max-Forwards", "From"):
        value = request.headers.get(name)
        if value is not None:
            items.append((name, value))
    items.append(("To", response.headers.get("To") or ""))
    items.append(("Call-ID", request.call_id))
    items.append(("CSeq", f"{request.cseq.number} ACK"))
    return Request("ACK", request.uri, h)


class InviteClientTransaction(_Transaction):
    """RFC 3261 §17.1.1, Figure 5."""

    __slots__ = ("_a", "ack")

    def __init__(
        self,
        request: Request,
        peer: Hashable,
        *,
        reliable: bool,
        timers: Timers = Timers(),
        key: Key | None = None,
    ) -> None:
        super().__init__(
            request, peer, reliable=reliable, timers=timers, key=key or client_key(request)
        )
        self.state = State.CALLING
        self._a = timers.t1
        self.ack: Request | None = None

    def start(self) -> list[Action]:
        acts: list[Action] = [Send(self.request, self.peer)]
        if not self.reliable:
            acts.append(self._start("A", self._a))
        acts.append(self._start("B", 64 * self.timers.t1))
        return acts

    def receive(self, response: Response) -> list[Action]:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            acts: list[Action] = []
            if self.state is State.CALLING:
                if not self.reliable:
                    acts.append(self._cancel("A"))
                acts.append(self._cancel("B"))
            if status < 200:
                self.state = State.PROCEEDING
                acts.append(Deliver(response, self, self.peer))
                return acts
            if status < 300:
                # RFC 3261 §17.1.1.2: a 2xx ends the transaction; the TU sends the ACK
                acts.append(Deliver(response, self, self.peer))
                acts.append(self._terminate("2xx received"))
                return acts
            self.state = State.COMPLETED
            self.ack = make_ack(self.request, response)
            acts.append(Send(self.ack, self.peer))
            acts.append(Deliver(response, self, self.peer))
            acts += self._wait_or_end("D", 32.0, "completed")
            return acts
        if self.state is State.COMPLETED and status >= 300 and self.ack is not None:
            return [Send(self.ack, self.peer)]  # retransmitted final: ACK again, TU not told
        return []

    def timer_fired(self, name: str) -> list[Action]:
        if name == "A" and self.state is State.CALLING:
            self._a *= 2  # §17.1.1.2: the INVITE interval doubles until Timer B
            return [Send(self.request, self.peer), self._start("A", self._a)]
        if name == "B" and self.state is State.CALLING:
            acts: list[Action] = [Timeout(self.key, "B")]
            if not self.reliable:
                acts.insert(0, self._cancel("A"))
            return [*acts, self._terminate("timeout")]
        if name == "D" and self.state is State.COMPLETED:
            return [self._terminate("completed")]
        return []


class NonInviteClientTransaction(_Transaction):
    """RFC 3261 §17.1.2, Figure 6."""

    __slots__ = ("_e",)

    def __init__(
        self,
        request: Request,
        peer: Hashable,
        *,
        reliable: bool,
        timers: Timers = Timers(),
        key: Key | None = None,
    ) -> None:
        super().__init__(
            request, peer, reliable=reliable, timers=timers, key=key or client_key(request)
        )
        self._e = timers.t1

    def start(self) -> list[Action]:
        acts: list[Action] = [Send(self.request, self.peer)]
        if not self.reliable:
            acts.append(self._start("E", self._e))
        acts.append(self._start("F", 64 * self.timers.t1))
        return acts

    def receive(self, response: Response) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # Completed: retransmitted finals are absorbed
        if response.status < 200:
            self.state = State.PROCEEDING
            return [Deliver(response, self, self.peer)]
        self.state = State.COMPLETED
        acts: list[Action] = []
        if not self.reliable:
            acts.append(self._cancel("E"))
        acts.append(self._cancel("F"))
        acts.append(Deliver(response, self, self.peer))
        acts += self._wait_or_end("K", self.timers.t4, "completed")
        return acts

    def timer_fired(self, name: str) -> list[Action]:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            # §17.1.2.2: doubling up to T2 while Trying; T2 once Proceeding
            if self.state is State.TRYING:
                self._e = min(2 * self._e, self.timers.t2)
            else:
                self._e = self.timers.t2
            return [Send(self.request, self.peer), self._start("E", self._e)]
        if name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            acts: list[Action] = []
            if not self.reliable:
                acts.append(self._cancel("E"))
            return [*acts, Timeout(self.key, "F"), self._terminate("timeout")]
        if name == "K" and self.state is State.COMPLETED:
            return [self._terminate("completed")]
        return []


ClientTransaction: TypeAlias = InviteClientTransaction | NonInviteClientTransaction


# --------------------------------------------------------------------------- server


class InviteServerTransaction(_Transaction):
    """RFC 3261 §17.2.1, Figure 7.

    A 100 Trying goes out after `trying_after` seconds unless the TU has answered by then
    (§17.2.1: the TU may answer within 200 ms instead); None disables it.
    """

    __slots__ = ("_g", "_trying_after", "last_response")

    def __init__(
        self,
        request: Request,
        peer: Hashable,
        *,
        reliable: bool,
        timers: Timers = Timers(),
        key: Key | None = None,
        trying_after: float | None = 0.2,
    ) -> None:
        super().__init__(
            request, peer, reliable=reliable, timers=timers, key=key or server_key(request)
        )
        self.state = State.PROCEEDING
        self._g = timers.t1
        self._trying_after = trying_after
        self.last_response: Response | None = None

    def start(self) -> list[Action]:
        if self._trying_after is None:
            return []
        if self._trying_after <= 0:
            return self._send(_trying(self.request))
        return [self._start("Trying", self._trying_after)]

    def _send(self, response: Response) -> list[Action]:
        self.last_response = response
        return [Send(response, self.peer)]

    def send_response(self, response: Response) -> list[Action]:
        if self.state is not State.PROCEEDING:
            return []
        acts: list[Action] = []
        if self._trying_after is not None and self._trying_after > 0:
            acts.append(self._cancel("Trying"))
            self._trying_after = None
        acts += self._send(response)
        if response.status < 200:
            return acts
        if response.status < 300:
            # RFC 3261 §17.2.1: the TU retransmits 2xx itself; the transaction ends
            acts.append(self._terminate("2xx sent"))
            return acts
        self.state = State.COMPLETED
        if not self.reliable:
            acts.append(self._start("G", self._g))
        acts.append(self._start("H", 64 * self.timers.t1))
        return acts

    def receive(self, request: Request) -> list[Action]:
        if request.method == "ACK":
            if self.state is not State.COMPLETED:
                return []  # Confirmed: further ACKs are absorbed
            self.state = State.CONFIRMED
            acts: list[Action] = []
            if not self.reliable:
                acts.append(self._cancel("G"))
            acts.append(self._cancel("H"))
            acts += self._wait_or_end("I", self.timers.t4, "confirmed")
            return acts
        # a retransmitted INVITE: send the last response again (§17.2.1)
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response:
            return [Send(self.last_response, self.peer)]
        if self.state is State.PROCEEDING:
            # retransmitted before the TU answered: the 100 Trying is due now
            due: list[Action] = []
            if self._trying_after is not None and self._trying_after > 0:
                due.append(self._cancel("Trying"))
            self._trying_after = None
            return due + self._send(_trying(self.request))
        return []

    def timer_fired(self, name: str) -> list[Action]:
        if name == "Trying" and self.state is State.PROCEEDING and self.last_response is None:
            self._trying_after = None
            return self._send(_trying(self.request))
        if name == "G" and self.state is State.COMPLETED and self.last_response is not None:
            self._g = min(2 * self._g, self.timers.t2)
            return [Send(self.last_response, self.peer), self._start("G", self._g)]
        if name == "H" and self.state is State.COMPLETED:
            acts: list[Action] = []
            if not self.reliable:
                acts.append(self._cancel("G"))
            return [*acts, Timeout(self.key, "H"), self._terminate("timeout")]
        if name == "I" and self.state is State.CONFIRMED:
            return [self._terminate("confirmed")]
        return []


class NonInviteServerTransaction(_Transaction):
    """RFC 3261 §17.2.2, Figure 8."""

    __slots__ = ("last_response",)

    def __init__(
        self,
        request: Request,
        peer: Hashable,
        *,
        reliable: bool,
        timers: Timers = Timers(),
        key: Key | None = None,
    ) -> None:
        super().__init__(
            request, peer, reliable=reliable, timers=timers, key=key or server_key(request)
        )
        self.last_response: Response | None = None

    def start(self) -> list[Action]:
        return []

    def send_response(self, response: Response) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        self.last_response = response
        acts: list[Action] = [Send(response, self.peer)]
        if response.status < 200:
            self.state = State.PROCEEDING
            return acts
        self.state = State.COMPLETED
        return acts + self._wait_or_end("J", 64 * self.timers.t1, "completed")

    def receive(self, request: Request) -> list[Action]:
        # retransmissions: nothing while Trying, else the last response again
        if self.last_response is not None and self.state in (State.PROCEEDING, State.COMPLETED):
            return [Send(self.last_response, self.peer)]
        return []

    def timer_fired(self, name: str) -> list[Action]:
        if name == "J" and self.state is State.COMPLETED:
            return [self._terminate("completed")]
        return []


ServerTransaction: TypeAlias = InviteServerTransaction | NonInviteServerTransaction
Transaction: TypeAlias = ClientTransaction | ServerTransaction


def _trying(request: Request) -> Response:
    return make_response(request, 100)


# --------------------------------------------------------------------------- layer


class TransactionLayer:
    """The table of live transactions, keyed by RFC 3261 §17 transaction id."""

    def __init__(self, timers: Timers = Timers(), *, invite_trying_after: float | None = 0.2):
        self.timers = timers
        self._invite_trying_after = invite_trying_after
        self._table: dict[Key, Transaction] = {}

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._table.values()))

    def get(self, key: Key) -> Transaction | None:
        return self._table.get(key)

    def _track(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Terminated):
                self._table.pop(a.key, None)
        return actions

    def receive(self, message: Request | Response, peer: Hashable, reliable: bool) -> list[Action]:
        """Route an incoming, validated message.

        Raises ParseError (status 400) for a request without an RFC 3261 branch; the
        transport answers it statelessly.
        """
        if isinstance(message, Response):
            try:
                key = client_key(message)
            except ParseError:
                return []  # not one of ours: a response is never answered
            ct = self._table.get(key)
            if ct is None or isinstance(ct, InviteServerTransaction | NonInviteServerTransaction):
                # RFC 3261 §18.1.2: no match, the core sees it (2xx retransmissions)
                return [Deliver(message, None, peer)]
            return self._track(ct.receive(message))

        key = server_key(message)
        st = self._table.get(key)
        if isinstance(st, InviteServerTransaction | NonInviteServerTransaction):
            return self._track(st.receive(message))
        if message.method == "ACK":
            # an ACK for a 2xx is its own transaction-less request (§17.2.3, §13.2.2.4)
            return [Deliver(message, None, peer)]
        tx: ServerTransaction
        if message.method == "INVITE":
            tx = InviteServerTransaction(
                message,
                peer,
                reliable=reliable,
                timers=self.timers,
                key=key,
                trying_after=self._invite_trying_after,
            )
        else:
            tx = NonInviteServerTransaction(
                message, peer, reliable=reliable, timers=self.timers, key=key
            )
        self._table[key] = tx
        return self._track([Deliver(message, tx, peer), *tx.start()])

    def send_request(
        self, request: Request, peer: Hashable, reliable: bool
    ) -> tuple[ClientTransaction, list[Action]]:
        """Start a client transaction for `request` (its top Via must carry a new branch)."""
        ct: ClientTransaction
        if request.method == "INVITE":
            ct = InviteClientTransaction(request, peer, reliable=reliable, timers=self.timers)
        else:
            ct = NonInviteClientTransaction(request, peer, reliable=reliable, timers=self.timers)
        if ct.key in self._table:
            raise ValueError("a transaction with this branch already exists")
        self._table[ct.key] = ct
        return ct, self._track(ct.start())

    def send_response(self, tx: ServerTransaction, response: Response) -> list[Action]:
        return self._track(tx.send_response(response))

    def timer_fired(self, key: Key, name: str) -> list[Action]:
        tx = self._table.get(key)
        if tx is None:
            return []
        return self._track(tx.timer_fired(name))

    def transport_error(self, key: Key) -> list[Action]:
        tx = self._table.get(key)
        if tx is None:
            return []
        return self._track(tx.transport_error())

    def matching_invite(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 §9.2)."""
        key = server_key(cancel)
        tx = self._table.get((*key[:4], "INVITE"))
        return tx if isinstance(tx, InviteServerTransaction) else None
