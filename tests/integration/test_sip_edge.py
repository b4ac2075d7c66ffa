"""Remote SIP users on the edge listener (DESIGN §7): whatever request they send, registered or
not, it is an edge one; and an edge registration stays one across a restart.

The server's LAN listeners are on 127.0.0.1, SIP over TLS on the edge on 127.0.0.2. The
remote user's client is our Python SIP client over TLS to the edge address.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from .server import Server, free_port
from .sipclient import SipClient
from .test_sip import PIDF_BUSY
from .test_sip_federation import PIDF, _closed, lan, message, notify_until, presence_of, status

EDGE = "127.0.0.2"
# a small request rate, so that a burst is quick to send; two free failures, then a long wait
EDGE_LIMITS = "stanzas_per_second = 5\nauth_failures_free = 2\nauth_backoff = 60"


def edge_sip_server(make: Callable[..., Server]) -> Server:
    return make(
        "",
        sip=True,
        edge_host=EDGE,
        edge_ports={"sip_tls": free_port()},
        edge_extra=EDGE_LIMITS,
    )


@pytest.fixture(scope="module")
def server(make_module_server: Callable[..., Server]) -> Server:
    return edge_sip_server(make_module_server)


def edge(s: Server, user: str, password: str | None = None) -> SipClient:
    """A remote user's connection to the edge listener (nothing sent yet)."""
    pw = password or s.passwords[user]
    return SipClient(s.ports["edge_sip_tls"], user, pw, s.domain, "tls", host=EDGE)


def sessions_of(s: Server, user: str) -> list[dict[str, Any]]:
    listing = json.loads(s.ctl_ok("sessions", "--json").stdout)
    return [x for x in listing if x["jid"].startswith(f"{user}@")]


def publish(c: SipClient, aor: str, body: bytes = PIDF_BUSY) -> int:
    r = c.request(
        "PUBLISH",
        f"sip:{aor}",
        [("Event", "presence"), ("Content-Type", PIDF)],
        body,
        to=f"sip:{aor}",
        call_id="pub-" + c.call_id,
    )
    return r.status


def subscribe(c: SipClient, aor: str) -> int:
    r = c.request(
        "SUBSCRIBE",
        f"sip:{aor}",
        [("Event", "presence"), ("Accept", PIDF), ("Expires", "600")],
        to=f"sip:{aor}",
        call_id="sub-" + c.call_id,
    )
    return r.status


def test_unregistered_edge_user_is_remote_and_loses_everything_with_outside_access(
    server: Server,
) -> None:
    s = server
    dave, carol = s.new_users("dave", "carol")
    jd, jc = f"{dave}@{s.domain}", f"{carol}@{s.domain}"
    c = lan(s, carol)
    d = edge(s, dave)  # never registers
    try:
        # carol watches dave (colleagues: approved at once)
        assert subscribe(c, jd) in (200, 202)
        # dave, from home, publishes, watches carol and writes to her: all without REGISTER
        assert publish(d, jd) == 200
        notify_until(c, presence_of(jd, b'code="6500"'))
        assert subscribe(d, jc) in (200, 202)
        d.expect("NOTIFY")  # the dialog's first
        assert message(d, jc, "from home") == 200
        assert c.expect("MESSAGE").body == b"from home"
        # his presence comes from the edge, and says so
        (mine,) = sessions_of(s, dave)
        assert mine["origin"] == "edge" and mine["tls"] is True

        s.ctl_ok("policy", jd, "--outside-access", "off")
        # his subscription ends (RFC 6665 §4.2.2: rejected), then his connection closes
        n = d.expect("NOTIFY")
        while not (n.headers.get("Subscription-State") or "").startswith("terminated"):
            n = d.expect("NOTIFY")
        assert "reason=rejected" in (n.headers.get("Subscription-State") or "")
        assert _closed(d.sock)
        # what he published is gone: carol sees him offline, se-ctl shows nothing of his
        notify_until(c, lambda n: f"sip:{jd}".encode() in n.body and b">open<" not in n.body)
        assert sessions_of(s, dave) == []
        # every request type from the edge is refused for him now, each time
        d.close()
        d = edge(s, dave)
        assert publish(d, jd) == 403
        assert subscribe(d, jc) == 403
        assert message(d, jc, "again") == 403
        # the LAN still takes him
        inside = SipClient(s.ports["sip"], dave, s.passwords[dave], s.domain, "tcp")
        try:
            assert publish(inside, jd) == 200
            assert [x["origin"] for x in sessions_of(s, dave)] == ["internal"]
        finally:
            inside.close()
    finally:
        c.close()
        d.close()
    assert status(s)["edge"]["limits"]["outside_access_refused"] >= 3


def test_edge_lockout_counts_any_request_and_spares_the_lan(server: Server) -> None:
    s = server
    frank, carol = s.new_users("frank", "carol")
    jf, jc = f"{frank}@{s.domain}", f"{carol}@{s.domain}"
    wrong = edge(s, frank, "not-the-password")
    try:
        # wrong passwords on PUBLISH, SUBSCRIBE, MESSAGE: two free, then the account waits
        assert publish(wrong, jf) == 403
        assert subscribe(wrong, jc) == 403
        locked = wrong.request(
            "MESSAGE", f"sip:{jc}", [("Content-Type", "text/plain")], b"x", to=f"sip:{jc}"
        )
        assert locked.status == 503 and locked.headers.get("Retry-After")
    finally:
        wrong.close()
    right = edge(s, frank)
    try:
        assert publish(right, jf) == 503  # even with the right password, on the edge
    finally:
        right.close()
    inside = SipClient(s.ports["sip"], frank, s.passwords[frank], s.domain, "tcp")
    try:
        assert publish(inside, jf) == 200  # the LAN is another origin
    finally:
        inside.close()


def test_edge_connection_over_its_request_rate_gets_503_with_retry_after(
    server: Server,
) -> None:
    s = server
    raw = SipClient(s.ports["edge_sip_tls"], "nobody", "x", s.domain, "tls", host=EDGE)
    try:
        answers = [raw.request("OPTIONS", f"sip:{s.domain}", auth=False) for _ in range(40)]
    finally:
        raw.close()
    statuses = [r.status for r in answers]
    # a burst of five times the rate passes, then the connection must slow down
    assert 503 not in statuses[:20] and 503 in statuses, statuses
    assert all(r.headers.get("Retry-After") == "1" for r in answers if r.status == 503)
    limits = status(s)["edge"]["limits"]
    assert limits["stanza_rate_exceeded"] >= 1 and limits["limits"]["stanzas_per_second"] == 5


def test_edge_registration_keeps_its_origin_across_a_restart(
    make_server: Callable[..., Server],
) -> None:
    s = edge_sip_server(make_server)
    dave, erin = s.new_users("dave", "erin")
    jd = f"{dave}@{s.domain}"
    d = edge(s, dave)
    try:
        assert d.register(expires=600).status == 200
    finally:
        d.close()
    lan(s, erin).close()

    def origins() -> dict[str, list[str]]:
        return {u: [x["origin"] for x in sessions_of(s, u)] for u in (dave, erin)}

    assert origins() == {dave: ["edge"], erin: ["internal"]}
    s.stop()
    s.start()
    # restored from the store, each with the origin it was made with
    assert origins() == {dave: ["edge"], erin: ["internal"]}
    # so losing outside access still ends dave's, and only his
    s.ctl_ok("policy", jd, "--outside-access", "off")
    assert origins() == {dave: [], erin: ["internal"]}
    assert status(s)["edge"]["policy"]["policy_sessions_ended"] == 1
    s.stop()
    s.start()
    assert origins() == {dave: [], erin: ["internal"]}


def test_messages_outside_a_registration_are_archived_as_sip_with_their_origin(
    server: Server,
) -> None:
    s = server
    s.ctl_ok("archive", "policy", "set", "--mode", "all")
    dave, carol = s.new_users("dave", "carol")
    jd, jc = f"{dave}@{s.domain}", f"{carol}@{s.domain}"
    lan(s, carol)  # registered on the LAN, so that the messages are delivered
    # neither sender registers: no session tells the archive who they are
    assert message(edge(s, dave), jc, "from home, unregistered") == 200
    office = SipClient(s.ports["sip"], dave, s.passwords[dave], s.domain, "tcp")
    assert message(office, jc, "from the office, unregistered") == 200
    out = s.ctl_ok("archive", "search", "--json", "--user", jd).stdout
    records = {r["body"]: r for r in json.loads(out)["records"]}
    home, desk = records["from home, unregistered"], records["from the office, unregistered"]
    assert (home["protocol"], home["origin"]) == ("sip", "remote")
    assert (desk["protocol"], desk["origin"]) == ("sip", "internal")
