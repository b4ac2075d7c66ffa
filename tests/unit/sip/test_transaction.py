"""RFC 3261 §17 transactions driven by a fake clock: bytes never touch a socket."""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from pathlib import Path

import pytest

from standard_edition.sip.framing import parse_datagram
from standard_edition.sip.message import ParseError, Request, Response, make_response
from standard_edition.sip.transaction import (
    Action,
    CancelTimer,
    Deliver,
    InviteClientTransaction,
    InviteServerTransaction,
    Key,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    StartTimer,
    State,
    Terminated,
    Timeout,
    Timers,
    TransactionLayer,
)

PEER = ("192.0.2.10", 5060)
T = Timers()


def request(method: str = "MESSAGE", branch: str = "z9hG4bKabc123", cseq: int = 1) -> Request:
    data = (
        f"{method} sip:bob@example.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.test>;tag=a1\r\n"
        "To: <sip:bob@example.test>\r\n"
        "Call-ID: call-1@192.0.2.10\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    return msg


def ack_for(invite: Request, response: Response) -> Request:
    msg = request("ACK", branch=invite.top_via.branch or "")
    msg.headers.set("To", response.headers.get("To") or "")
    msg.headers.set("CSeq", f"{invite.cseq.number} ACK")
    return msg


class Clock:
    """Runs the timers a transaction asks for, in time order, like a reactor would."""

    def __init__(self, tx: object) -> None:
        self.tx = tx
        self.now = 0.0
        self._seq = 0
        self._timers: dict[str, tuple[float, int]] = {}
        self.sent: list[tuple[float, Request | Response]] = []
        self.delivered: list[Request | Response] = []
        self.timeouts: list[str] = []
        self.terminated: list[tuple[float, str]] = []
        self.started: list[tuple[str, float]] = []

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.sent.append((self.now, a.message))
            elif isinstance(a, StartTimer):
                self._seq += 1
                self._timers[a.name] = (self.now + a.seconds, self._seq)
                self.started.append((a.name, a.seconds))
            elif isinstance(a, CancelTimer):
                self._timers.pop(a.name, None)
            elif isinstance(a, Deliver):
                self.delivered.append(a.message)
            elif isinstance(a, Timeout):
                self.timeouts.append(a.timer)
            elif isinstance(a, Terminated):
                self.terminated.append((self.now, a.reason))
                self._timers.clear()

    def run(self, until: float = 1000.0) -> None:
        while self._timers:
            heap = [(at, seq, name) for name, (at, seq) in self._timers.items()]
            heapq.heapify(heap)
            at, _, name = heap[0]
            if at > until:
                return
            del self._timers[name]
            self.now = at
            self.apply(self.tx.timer_fired(name))  # type: ignore[attr-defined]

    @property
    def send_times(self) -> list[float]:
        return [t for t, _ in self.sent]

    def pending(self) -> set[str]:
        return set(self._timers)


# --------------------------------------------------------------------------- non-INVITE client


def test_udp_non_invite_client_retransmits_doubling_to_t2_then_times_out_with_f() -> None:
    tx = NonInviteClientTransaction(request(), PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.run()
    # Timer E: 0.5, 1, 2, 4, 4, 4 ... until Timer F at 64*T1 = 32 s
    assert clock.send_times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert clock.timeouts == ["F"]
    assert clock.terminated == [(32.0, "timeout")]


def test_udp_non_invite_client_retransmits_every_t2_once_proceeding() -> None:
    tx = NonInviteClientTransaction(request(), PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.run(until=0.6)  # one retransmission at 0.5, next E due at 1.5
    clock.apply(tx.receive(make_response(tx.request, 100)))
    assert tx.state is State.PROCEEDING
    clock.run(until=10)
    # the E firing at 1.5 retransmits and resets E to T2
    assert clock.send_times == [0, 0.5, 1.5, 5.5, 9.5]


def test_non_invite_client_final_response_then_timer_k_absorbs_retransmissions() -> None:
    tx = NonInviteClientTransaction(request(), PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    ok = make_response(tx.request, 200, to_tag="b1")
    clock.apply(tx.receive(ok))
    assert clock.delivered == [ok] and tx.state is State.COMPLETED
    assert clock.pending() == {"K"}
    clock.apply(tx.receive(ok))  # a retransmitted 200 is absorbed
    assert clock.delivered == [ok]
    clock.run()
    assert clock.terminated == [(T.t4, "completed")]


def test_reliable_non_invite_client_has_no_timer_e_and_k_is_zero() -> None:
    tx = NonInviteClientTransaction(request(), PEER, reliable=True)
    clock = Clock(tx)
    clock.apply(tx.start())
    assert clock.started == [("F", 32.0)]
    clock.apply(tx.receive(make_response(tx.request, 200, to_tag="b1")))
    assert clock.terminated == [(0.0, "completed")]


def test_reliable_non_invite_client_still_times_out_with_f() -> None:
    tx = NonInviteClientTransaction(request(), PEER, reliable=True)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.run()
    assert clock.send_times == [0]
    assert clock.timeouts == ["F"] and clock.terminated == [(32.0, "timeout")]


# --------------------------------------------------------------------------- INVITE client


def test_udp_invite_client_doubles_timer_a_until_timer_b() -> None:
    tx = InviteClientTransaction(request("INVITE"), PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.run()
    # Timer A doubles without the T2 cap: 0.5, 1, 2, 4, 8, 16; Timer B at 32 s
    assert clock.send_times == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert clock.timeouts == ["B"]
    assert clock.terminated == [(32.0, "timeout")]


def test_invite_client_acks_a_failure_and_waits_timer_d() -> None:
    invite = request("INVITE")
    tx = InviteClientTransaction(invite, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.apply(tx.receive(make_response(invite, 180, to_tag="b1")))
    assert tx.state is State.PROCEEDING and clock.pending() == set()
    busy = make_response(invite, 486, to_tag="b1")
    clock.apply(tx.receive(busy))
    ack = clock.sent[-1][1]
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.cseq.number == invite.cseq.number and ack.cseq.method == "ACK"
    assert ack.to.tag == "b1" and ack.uri == invite.uri
    assert ack.headers.get_all("Via") == invite.headers.get_all("Via")[:1]
    clock.apply(tx.receive(busy))  # retransmitted 486: ACK again, TU not told
    assert [m for _, m in clock.sent].count(ack) == 2
    assert [d.status for d in clock.delivered if isinstance(d, Response)] == [180, 486]
    clock.run()
    assert clock.terminated == [(32.0, "completed")]  # Timer D: 32 s on UDP


def test_reliable_invite_client_has_no_timer_a_and_d_is_zero() -> None:
    invite = request("INVITE")
    tx = InviteClientTransaction(invite, PEER, reliable=True)
    clock = Clock(tx)
    clock.apply(tx.start())
    assert clock.started == [("B", 32.0)]
    clock.apply(tx.receive(make_response(invite, 404, to_tag="b1")))
    assert clock.terminated == [(0.0, "completed")]


def test_invite_client_2xx_ends_the_transaction() -> None:
    invite = request("INVITE")
    tx = InviteClientTransaction(invite, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.apply(tx.receive(make_response(invite, 200, to_tag="b1")))
    assert clock.terminated == [(0.0, "2xx received")]
    assert len(clock.sent) == 1  # no ACK from the transaction for a 2xx


# --------------------------------------------------------------------------- INVITE server


def test_udp_invite_server_retransmits_failure_with_g_until_h() -> None:
    invite = request("INVITE")
    tx = InviteServerTransaction(invite, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.apply(tx.send_response(make_response(invite, 488, to_tag="s1")))
    assert tx.state is State.COMPLETED
    clock.run()
    # Timer G: T1 doubling up to T2; Timer H at 64*T1 with no ACK
    assert clock.send_times == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert clock.timeouts == ["H"]
    assert clock.terminated == [(32.0, "timeout")]


def test_invite_server_ack_confirms_and_timer_i_absorbs_acks() -> None:
    invite = request("INVITE")
    tx = InviteServerTransaction(invite, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    resp = make_response(invite, 488, to_tag="s1")
    clock.apply(tx.send_response(resp))
    clock.run(until=0.7)
    ack = ack_for(invite, resp)
    clock.apply(tx.receive(ack))
    assert tx.state is State.CONFIRMED
    assert clock.pending() == {"I"}
    clock.apply(tx.receive(ack))  # absorbed
    assert clock.delivered == []
    clock.run()
    assert clock.terminated == [(0.5 + T.t4, "confirmed")]


def test_reliable_invite_server_has_no_timer_g_but_h_runs_and_i_is_zero() -> None:
    invite = request("INVITE")
    tx = InviteServerTransaction(invite, PEER, reliable=True)
    clock = Clock(tx)
    clock.apply(tx.start())
    resp = make_response(invite, 488, to_tag="s1")
    clock.apply(tx.send_response(resp))
    assert clock.pending() == {"H"}
    clock.apply(tx.receive(ack_for(invite, resp)))
    assert clock.terminated == [(0.0, "confirmed")]


def test_invite_server_sends_100_trying_after_200ms_without_an_answer() -> None:
    invite = request("INVITE")
    tx = InviteServerTransaction(invite, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.run(until=1)
    assert [(t, m.status) for t, m in clock.sent if isinstance(m, Response)] == [(0.2, 100)]


def test_invite_server_retransmitted_invite_gets_the_last_response() -> None:
    invite = request("INVITE")
    tx = InviteServerTransaction(invite, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.start())
    resp = make_response(invite, 488, to_tag="s1")
    clock.apply(tx.send_response(resp))
    clock.apply(tx.receive(invite))
    assert [m for _, m in clock.sent] == [resp, resp]


# --------------------------------------------------------------------------- non-INVITE server


def test_non_invite_server_absorbs_retransmissions_and_resends_the_final() -> None:
    msg = request()
    tx = NonInviteServerTransaction(msg, PEER, reliable=False)
    clock = Clock(tx)
    clock.apply(tx.receive(msg))  # Trying: absorbed silently
    assert clock.sent == []
    ok = make_response(msg, 200, to_tag="s1")
    clock.apply(tx.send_response(ok))
    clock.apply(tx.receive(msg))
    assert [m for _, m in clock.sent] == [ok, ok]
    assert clock.pending() == {"J"}
    clock.run()
    assert clock.terminated == [(32.0, "completed")]  # Timer J: 64*T1 on UDP


def test_reliable_non_invite_server_timer_j_is_zero() -> None:
    msg = request()
    tx = NonInviteServerTransaction(msg, PEER, reliable=True)
    clock = Clock(tx)
    clock.apply(tx.send_response(make_response(msg, 200, to_tag="s1")))
    assert clock.terminated == [(0.0, "completed")]


def test_timers_are_configurable() -> None:
    tx = NonInviteClientTransaction(
        request(), PEER, reliable=False, timers=Timers(t1=0.1, t2=0.4, t4=1.0)
    )
    clock = Clock(tx)
    clock.apply(tx.start())
    clock.run()
    assert clock.started[:2] == [("E", 0.1), ("F", 6.4)]
    assert clock.terminated[-1][0] == pytest.approx(6.4)


# --------------------------------------------------------------------------- layer


class LayerClock:
    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.actions: list[Action] = []

    def feed(self, msg: Request | Response, peer: Hashable = PEER, reliable: bool = False):
        acts = self.layer.receive(msg, peer, reliable)
        self.actions += acts
        return acts


def test_layer_reports_new_request_and_absorbs_its_retransmission() -> None:
    layer = TransactionLayer()
    msg = request()
    (deliver,) = layer.receive(msg, PEER, False)
    assert isinstance(deliver, Deliver) and deliver.message is msg
    tx = deliver.transaction
    assert isinstance(tx, NonInviteServerTransaction)
    assert layer.receive(msg, PEER, False) == []  # absorbed, TU not told twice
    ok = make_response(msg, 200, to_tag="s1")
    acts = layer.send_response(tx, ok)
    assert acts[0] == Send(ok, PEER)
    assert layer.receive(msg, PEER, False) == [Send(ok, PEER)]
    key: Key = tx.key
    assert layer.timer_fired(key, "J") == [Terminated(key, "completed")]
    assert len(layer) == 0


def test_layer_absorbs_ack_for_a_non_2xx_final() -> None:
    layer = TransactionLayer(invite_trying_after=None)
    invite = request("INVITE")
    (deliver,) = layer.receive(invite, PEER, False)
    tx = deliver.transaction
    assert isinstance(tx, InviteServerTransaction)
    resp = make_response(invite, 488, to_tag="s1")
    layer.send_response(tx, resp)
    acts = layer.receive(ack_for(invite, resp), PEER, False)
    assert not any(isinstance(a, Deliver) for a in acts)
    assert tx.state is State.CONFIRMED


def test_layer_passes_ack_for_2xx_and_stray_responses_to_the_tu() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKnew-branch")
    assert layer.receive(ack, PEER, False) == [Deliver(ack, None, PEER)]
    stray = make_response(request(branch="z9hG4bKother"), 200)
    assert layer.receive(stray, PEER, False) == [Deliver(stray, None, PEER)]


def test_layer_routes_responses_to_client_transactions() -> None:
    layer = TransactionLayer()
    msg = request(branch="z9hG4bKclient1")
    tx, acts = layer.send_request(msg, PEER, reliable=False)
    assert acts[0] == Send(msg, PEER)
    ok = make_response(msg, 200, to_tag="x")
    delivered = layer.receive(ok, PEER, False)
    assert Deliver(ok, tx, PEER) in delivered
    assert layer.receive(ok, PEER, False) == []  # retransmission absorbed in Completed


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    layer = TransactionLayer()
    a = request()
    b = request()
    b.headers.set("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKabc123")
    assert len(layer.receive(a, PEER, False)) == 1
    assert len(layer.receive(b, PEER, False)) == 1
    assert len(layer) == 2


def test_cancel_finds_its_invite() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    (deliver, *_) = layer.receive(invite, PEER, False)
    cancel = request("CANCEL")
    assert layer.matching_invite(cancel) is deliver.transaction


TORTURE = Path(__file__).parent / "torture"


@pytest.mark.parametrize("name", ["badbranch", "inv2543"])
def test_rfc2543_or_empty_branch_is_rejected_with_400(name: str) -> None:
    # RFC 4475 §3.2.1 (branch = bare magic cookie) and §3.4.1 (no branch at all)
    msg = parse_datagram((TORTURE / f"{name}.dat").read_bytes())
    assert isinstance(msg, Request)
    with pytest.raises(ParseError) as info:
        TransactionLayer().receive(msg, PEER, False)
    assert info.value.status == 400
