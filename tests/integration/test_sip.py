"""SIP/SIMPLE against the real server: Debian's sipp, our own small SIP client, slixmpp.

sipp covers UDP and TCP with MD5 digest; `sipclient.SipClient` covers TLS and SHA-256,
which Debian's sipp lacks. Messages and presence cross between SIP and XMPP in both
directions through the core.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import DOMAIN, Server
from .sipclient import SipClient
from .xmppclient import Sessions, next_matching

SCENARIOS = Path(__file__).parent / "sipp"
sipp = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(sipp is None, reason="sipp (Debian sip-tester) not installed")

PIDF_BUSY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    b'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:x@example.test">'
    b'<tuple id="t1"><status><basic>open</basic></status></tuple>'
    b'<dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities>'
    b"<dm:note>on a deadline</dm:note></dm:person></presence>"
)


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("sip"), sip=True).start()
    yield s
    s.stop()


def client(server: Server, user: str, transport: str = "udp", **kw) -> SipClient:
    port = server.ports["sip_tls" if transport == "tls" else "sip"]
    return SipClient(port, user, server.passwords[user], server.domain, transport, **kw)


def run_sipp(server: Server, scenario: str, fields: str, transport: str, tmp: Path):
    inj = tmp / f"{scenario}-{transport}.csv"
    inj.write_text(f"SEQUENTIAL\n{fields}\n")
    return subprocess.run(
        [
            sipp or "sipp",
            f"127.0.0.1:{server.ports['sip']}",
            "-sf",
            str(SCENARIOS / f"{scenario}.xml"),
            "-inf",
            str(inj),
            "-t",
            "u1" if transport == "udp" else "t1",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
            "-max_retrans",
            "3",
            "-trace_err",
        ],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=40,
    )


# -- sipp: REGISTER, MESSAGE, SUBSCRIBE + NOTIFY, PUBLISH -----------------------------------


@needs_sipp
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_register_message_subscribe_publish(
    sip_server: Server, transport: str, tmp_path: Path
) -> None:
    carol, bob = sip_server.new_users("carol", "bob")
    auth = f"[authentication username={carol} password={sip_server.passwords[carol]}]"
    r = run_sipp(sip_server, "simple", f"{carol};{auth};{DOMAIN};{bob}", transport, tmp_path)
    errors = "\n".join(p.read_text() for p in tmp_path.glob("*_errors.log"))
    assert r.returncode == 0, f"sipp exit {r.returncode}\n{r.stderr[-2000:]}\n{errors[-3000:]}"


# -- our own client: TLS, SHA-256 -----------------------------------------------------------


def test_register_over_tls_with_md5_challenge(sip_server: Server) -> None:
    (dave,) = sip_server.new_users("dave")
    c = client(sip_server, dave, "tls")
    try:
        r = c.register()
        assert r.status == 200, r
        assert c.algorithms_seen == ["MD5"]
        assert any("expires=" in v for v in r.headers.get_all("Contact"))
    finally:
        c.close()


def test_sha256_digest_is_challenged_after_md5(make_server) -> None:
    s = make_server('[sip]\ndigest = ["MD5", "SHA-256"]', sip=True)
    (erin,) = s.new_users("erin")
    c = client(s, erin, "tcp", prefer="SHA-256")
    try:
        r = c.register()
        assert r.status == 200, r
        # DESIGN §3: MD5 first, SHA-256 after it (RFC 8760 §2.4)
        assert c.algorithms_seen == ["MD5", "SHA-256"]
        # and a wrong password with SHA-256 is refused
        r = c.register(password="wrong-password")
        assert r.status == 403
    finally:
        c.close()


# -- SIP <-> XMPP messages ------------------------------------------------------------------


def test_messages_cross_between_sip_and_xmpp_both_ways(sip_server: Server, run) -> None:
    alice, carol = sip_server.new_users("alice", "carol")
    c = client(sip_server, carol, "udp")

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            assert (await asyncio.to_thread(c.register)).status == 200
            r = await asyncio.to_thread(
                c.request,
                "MESSAGE",
                f"sip:{alice}@{DOMAIN}",
                [("Content-Type", "text/plain;charset=UTF-8")],
                "grüße from SIP".encode(),
                to=f"sip:{alice}@{DOMAIN}",
                call_id="msg-" + c.call_id,
            )
            assert r.status == 200, r
            m = await next_matching(a.inbox, lambda m: m["body"] == "grüße from SIP")
            assert m["from"].bare == f"{carol}@{DOMAIN}"
            assert m["type"] == "chat"
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody="hi carol", mtype="chat")
            req = await asyncio.to_thread(c.expect, "MESSAGE")
            assert req.body == b"hi carol"
            assert req.content_type == "text/plain"
            assert f"sip:{alice}@{DOMAIN}" in (req.headers.get("From") or "")

    try:
        run(main())
    finally:
        c.close()


def test_message_to_unknown_or_offline_user(make_server) -> None:
    s = make_server("[im]\noffline = false", sip=True)
    carol, bob = s.new_users("carol", "bob")
    c = client(s, carol)
    try:
        r = c.request("MESSAGE", f"sip:nobody@{DOMAIN}", [("Content-Type", "text/plain")], b"x")
        assert r.status == 404
        r = c.request("MESSAGE", f"sip:{bob}@{DOMAIN}", [("Content-Type", "text/plain")], b"x")
        assert r.status == 480  # offline, and offline IM is off
        big = b"x" * (40 * 1024)
        r = c.request("MESSAGE", f"sip:{bob}@{DOMAIN}", [("Content-Type", "text/plain")], big)
        assert r.status == 413
        r = c.request("MESSAGE", f"sip:{bob}@{DOMAIN}", [("Content-Type", "image/png")], b"x")
        assert r.status == 415
        # someone else's identity is refused even with good credentials
        forged = c.build("MESSAGE", f"sip:{bob}@{DOMAIN}", [("Content-Type", "text/plain")], b"x")
        assert forged.headers.get("From")
    finally:
        c.close()


def test_large_message_to_a_udp_registration_goes_over_tcp(sip_server: Server, run) -> None:
    alice, carol = sip_server.new_users("alice", "carol")
    c = client(sip_server, carol, "udp")
    # a TCP listener on the same port as carol's UDP contact (RFC 3261 §18.1.1)
    lst = socket.socket()
    lst.bind(c.local)
    lst.listen(1)
    lst.settimeout(10)
    text = "y" * 2000

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            assert (await asyncio.to_thread(c.register)).status == 200
            a.send_message(mto=f"{carol}@{DOMAIN}", mbody=text, mtype="chat")
            conn, _ = await asyncio.to_thread(lst.accept)
            conn.settimeout(10)
            data = b""
            while text.encode() not in data:
                chunk = await asyncio.to_thread(conn.recv, 65536)
                assert chunk
                data += chunk
            assert data.startswith(b"MESSAGE ")
            assert b"SIP/2.0/TCP" in data
            conn.close()

    try:
        run(main())
    finally:
        lst.close()
        c.close()


# -- presence both ways ---------------------------------------------------------------------


def test_xmpp_user_sees_sip_users_published_busy(sip_server: Server, run) -> None:
    alice, carol = sip_server.new_users("alice", "carol")
    c = client(sip_server, carol, "udp")

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            a.send_presence(pto=f"{carol}@{DOMAIN}", ptype="subscribe")
            assert (await asyncio.to_thread(c.register)).status == 200
            await next_matching(
                a.presences,
                lambda p: p["from"].bare == f"{carol}@{DOMAIN}" and p["type"] == "available",
            )
            r = await asyncio.to_thread(
                c.request,
                "PUBLISH",
                f"sip:{carol}@{DOMAIN}",
                [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
                PIDF_BUSY,
                to=f"sip:{carol}@{DOMAIN}",
                call_id="pub-" + c.call_id,
            )
            assert r.status == 200, r
            etag = r.headers.get("SIP-ETag")
            assert etag
            p = await next_matching(
                a.presences,
                lambda p: p["from"].bare == f"{carol}@{DOMAIN}" and p["show"] == "dnd",
            )
            assert p["status"] == "on a deadline"
            assert 'code="6500"' in str(p)
            # a refresh by entity tag keeps the state and gives a new tag (RFC 3903 §4.2)
            r = await asyncio.to_thread(
                c.request,
                "PUBLISH",
                f"sip:{carol}@{DOMAIN}",
                [("Event", "presence"), ("SIP-If-Match", etag)],
                to=f"sip:{carol}@{DOMAIN}",
                call_id="pub-" + c.call_id,
            )
            assert r.status == 200 and r.headers.get("SIP-ETag") not in (None, etag)
            r = await asyncio.to_thread(
                c.request,
                "PUBLISH",
                f"sip:{carol}@{DOMAIN}",
                [("Event", "presence"), ("SIP-If-Match", etag)],
                to=f"sip:{carol}@{DOMAIN}",
                call_id="pub-" + c.call_id,
            )
            assert r.status == 412  # the old tag is gone

    try:
        run(main())
    finally:
        c.close()


def test_sip_watcher_is_notified_when_xmpp_user_goes_dnd(sip_server: Server, run) -> None:
    alice, carol = sip_server.new_users("alice", "carol")
    c = client(sip_server, carol, "tcp")

    async def main() -> None:
        async with Sessions(sip_server) as xs:
            a = await xs.login(alice)
            r = await asyncio.to_thread(
                c.request,
                "SUBSCRIBE",
                f"sip:{alice}@{DOMAIN}",
                [("Event", "presence"), ("Accept", "application/pidf+xml"), ("Expires", "600")],
                to=f"sip:{alice}@{DOMAIN}",
                call_id="sub-" + c.call_id,
            )
            assert r.status in (200, 202), r
            first = await asyncio.to_thread(c.expect, "NOTIFY")
            assert (first.headers.get("Subscription-State") or "").startswith("active")
            # alice's initial presence may reach the server just after the SUBSCRIBE
            while b">open<" not in first.body:
                first = await asyncio.to_thread(c.expect, "NOTIFY")
            a.send_presence(pshow="dnd", pstatus="presenting")
            deadline = time.monotonic() + 10
            while True:
                n = await asyncio.to_thread(c.expect, "NOTIFY")
                if b'code="9500"' in n.body:
                    break
                assert time.monotonic() < deadline, n.body
            assert b"<rpid:busy" in n.body or b"busy" in n.body
            assert b"presenting" in n.body
            assert n.content_type == "application/pidf+xml"

    try:
        run(main())
    finally:
        c.close()


# -- registrar ------------------------------------------------------------------------------


def _contacts(r) -> list[str]:
    return r.headers.get_all("Contact")


def test_several_contacts_unregister_and_wildcard(sip_server: Server) -> None:
    (fred,) = sip_server.new_users("fred")
    c = client(sip_server, fred)
    try:
        assert c.register().status == 200
        other = f"<sip:{fred}@127.0.0.1:5999>"
        r = c.request("REGISTER", f"sip:{DOMAIN}", [("Contact", other)], to=c.aor)
        assert r.status == 200
        assert len(_contacts(r)) == 2  # RFC 3261 §10.3 step 8: every current binding
        sessions = sip_server.ctl_ok("sessions").stdout
        assert sessions.count(f"{fred}@{DOMAIN}/sip-") == 2, sessions
        # too short an expiry: 423 with Min-Expires (§10.3 step 7)
        r = c.register(expires=5)
        assert r.status == 423 and r.headers.get("Min-Expires") == "60"
        # one contact removed with expires 0
        r = c.request("REGISTER", f"sip:{DOMAIN}", [("Contact", f"{other};expires=0")], to=c.aor)
        assert r.status == 200 and len(_contacts(r)) == 1
        # "*" without Expires: 0 is refused; with it every binding goes
        r = c.request("REGISTER", f"sip:{DOMAIN}", [("Contact", "*")], to=c.aor, contact=False)
        assert r.status == 400
        r = c.request(
            "REGISTER",
            f"sip:{DOMAIN}",
            [("Contact", "*"), ("Expires", "0")],
            to=c.aor,
            contact=False,
        )
        assert r.status == 200 and _contacts(r) == []
        assert f"{fred}@{DOMAIN}/sip-" not in sip_server.ctl_ok("sessions").stdout
    finally:
        c.close()


def test_registration_survives_a_restart(make_server, run) -> None:
    s = make_server(sip=True)
    alice, carol = s.new_users("alice", "carol")
    c = client(s, carol)
    try:
        assert c.register().status == 200
        s.stop()
        s.start()
        assert f"{carol}@{DOMAIN}/sip-" in s.ctl_ok("sessions").stdout

        async def main() -> None:
            async with Sessions(s) as xs:
                a = await xs.login(alice)
                a.send_message(mto=f"{carol}@{DOMAIN}", mbody="after the restart", mtype="chat")
                req = await asyncio.to_thread(c.expect, "MESSAGE")
                assert req.body == b"after the restart"

        run(main())
    finally:
        c.close()


def test_wrong_passwords_from_one_address_slow_down(sip_server: Server) -> None:
    (gina,) = sip_server.new_users("gina")
    c = client(sip_server, gina, "tcp")
    try:
        times = []
        for _ in range(7):
            t0 = time.monotonic()
            r = c.register(password="not-the-password")
            times.append(time.monotonic() - t0)
            assert r.status == 403
        assert sum(times[:3]) < 1.0, times  # the first few failures are answered at once
        assert times[-1] >= 0.9, times  # then each answer waits longer
        assert times[-1] > times[3], times
    finally:
        c.close()


# -- bad input ------------------------------------------------------------------------------


def _raw(server: Server, data: bytes, transport: str = "udp") -> bytes:
    """Send raw bytes; return the first answer (b"" when the server only hangs up)."""
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(3)
            s.sendto(
                data.replace(b"PORT", str(s.getsockname()[1]).encode()),
                ("127.0.0.1", server.ports["sip"]),
            )
            return s.recvfrom(65535)[0]
    with socket.create_connection(("127.0.0.1", server.ports["sip"]), timeout=5) as s:
        s.sendall(data.replace(b"PORT", str(s.getsockname()[1]).encode()))
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65535)
            if not chunk:
                break
            out += chunk
        return out


def _request(
    start: str = "OPTIONS sip:example.test SIP/2.0",
    *,
    drop: str = "",
    cseq: str = "1 OPTIONS",
    extra: str = "",
    body: bytes = b"",
    length: int | None = None,
) -> bytes:
    lines = [
        "Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bKbad" + str(time.monotonic_ns()),
        "From: <sip:x@example.test>;tag=1",
        "To: <sip:example.test>",
        "Call-ID: bad-input@test",
        f"CSeq: {cseq}",
        "Max-Forwards: 70",
    ]
    lines = [ln for ln in lines if not (drop and ln.startswith(drop + ":"))]
    if extra:
        lines.append(extra)
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return (start + "\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + body


def _status(answer: bytes) -> int:
    assert answer.startswith(b"SIP/2.0 "), answer[:200]
    return int(answer[8:11])


def test_malformed_request_line_is_a_400(sip_server: Server) -> None:
    assert _status(_raw(sip_server, _request("OPTIONS  sip:example.test SIP/2.0"))) == 400
    assert _status(_raw(sip_server, _request("OPTIONS sip:example.test SIP/7.0"))) == 505


def test_missing_mandatory_headers_are_a_400(sip_server: Server) -> None:
    for name in ("Call-ID", "From", "To", "CSeq"):
        assert _status(_raw(sip_server, _request(drop=name))) == 400, name


def test_wrong_content_length_is_a_400(sip_server: Server) -> None:
    # over UDP a body shorter than Content-Length is an error (RFC 3261 §18.3)
    data = _request(body=b"short", length=50, extra="Content-Type: text/plain")
    assert _status(_raw(sip_server, data)) == 400
    data = _request(body=b"x", length=-1)
    assert _status(_raw(sip_server, data, "tcp")) == 400


def test_huge_header_section_closes_the_connection(sip_server: Server) -> None:
    data = _request(extra="X-Filler: " + "a" * 40_000)
    answer = _raw(sip_server, data, "tcp")
    assert answer == b"" or _status(answer) in (400, 513)


def test_unknown_and_unserved_methods(sip_server: Server) -> None:
    answer = _raw(sip_server, _request("FOO sip:example.test SIP/2.0", cseq="1 FOO"))
    assert _status(answer) == 501
    answer = _raw(sip_server, _request("INFO sip:example.test SIP/2.0", cseq="1 INFO"))
    assert _status(answer) == 405 and b"\r\nAllow: " in answer
    answer = _raw(sip_server, _request("INVITE sip:x@example.test SIP/2.0", cseq="1 INVITE"))
    assert _status(answer) == 488 and b"MESSAGE" in answer.split(b"\r\nAllow: ")[1]
    answer = _raw(sip_server, _request())
    assert _status(answer) == 200 and b"\r\nAllow: " in answer


def test_two_sip_users_message_and_see_each_other_without_xmpp(sip_server: Server) -> None:
    carol, dave = sip_server.new_users("carol", "dave")
    c = client(sip_server, carol, "udp")
    d = client(sip_server, dave, "tcp")
    try:
        assert c.register().status == 200
        assert d.register().status == 200
        r = d.request(
            "SUBSCRIBE",
            f"sip:{carol}@{DOMAIN}",
            [("Event", "presence"), ("Expires", "300")],
            to=f"sip:{carol}@{DOMAIN}",
            call_id="sub-" + d.call_id,
        )
        assert r.status == 200, r
        dialog_tag = r.to.tag
        assert b">open<" in d.expect("NOTIFY").body
        r = c.request(
            "MESSAGE",
            f"sip:{dave}@{DOMAIN}",
            [("Content-Type", "text/plain")],
            b"lunch?",
            to=f"sip:{dave}@{DOMAIN}",
        )
        assert r.status == 200
        assert d.expect("MESSAGE").body == b"lunch?"
        r = c.request(
            "PUBLISH",
            f"sip:{carol}@{DOMAIN}",
            [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
            PIDF_BUSY,
            to=f"sip:{carol}@{DOMAIN}",
        )
        assert r.status == 200
        deadline = time.monotonic() + 10
        while b'code="6500"' not in (n := d.expect("NOTIFY")).body:
            assert time.monotonic() < deadline
        assert b"on a deadline" in n.body
        # unsubscribing ends the dialog with a final NOTIFY (RFC 6665 §4.2.2)
        r = d.request(
            "SUBSCRIBE",
            f"sip:{carol}@{DOMAIN}",
            [("Event", "presence"), ("Expires", "0")],
            to=f"sip:{carol}@{DOMAIN}",
            to_tag=dialog_tag,
            call_id="sub-" + d.call_id,
        )
        assert r.status == 200, r
        while True:
            last = d.expect("NOTIFY")
            if (last.headers.get("Subscription-State") or "").startswith("terminated"):
                break
    finally:
        c.close()
        d.close()


def test_status_lists_the_sip_listeners(sip_server: Server) -> None:
    import json

    status = json.loads(sip_server.ctl_ok("status", "--json").stdout)
    listeners = {(x["name"], x["transport"]) for x in status["listeners"]}
    assert {("sip", "udp"), ("sip", "tcp"), ("sip_tls", "tcp")} <= listeners


# -- watcher info (RFC 3857, RFC 3858) ------------------------------------------------------


def _subscribe(c: SipClient, owner: str, event: str, **kw):
    return c.request(
        "SUBSCRIBE",
        f"sip:{owner}@{DOMAIN}",
        [("Event", event), ("Accept", "application/watcherinfo+xml"), ("Expires", "300")],
        to=f"sip:{owner}@{DOMAIN}",
        **kw,
    )


def _winfo_until(c: SipClient, pred) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        n = c.expect("NOTIFY")
        if n.headers.get("Event") == "presence.winfo" and pred(n.body):
            assert n.content_type == "application/watcherinfo+xml"
            return n.body
        assert time.monotonic() < deadline, n.body


def test_winfo_shows_who_waits_and_subscribing_back_approves(sip_server: Server) -> None:
    carol, dave = sip_server.new_users("carol", "dave")
    sip_server.ctl_ok("presence", "set", f"{carol}@{DOMAIN}", "--privacy", "on")
    c = client(sip_server, carol, "tcp")
    d = client(sip_server, dave, "tcp")
    try:
        assert c.register().status == 200
        assert d.register().status == 200
        r = _subscribe(c, carol, "presence.winfo", call_id="winfo-" + c.call_id)
        assert r.status == 200, r
        first = _winfo_until(c, lambda b: True)
        assert b'state="full"' in first and b"<watcher " not in first
        # someone else's watcher list is not for carol
        assert _subscribe(d, carol, "presence.winfo").status == 403
        # dave asks for carol's presence: pending (privacy mode), and carol sees him waiting
        r = _subscribe(d, carol, "presence", call_id="sub-" + d.call_id)
        assert r.status == 202, r
        assert (d.expect("NOTIFY").headers.get("Subscription-State") or "").startswith("pending")
        body = _winfo_until(c, lambda b: b"pending" in b)
        assert f'status="pending">sip:{dave}@{DOMAIN}<'.encode() in body
        assert b'version="1"' in body
        # carol subscribes back to dave: that approves him, and his dialog turns active at
        # once (the core's roster listener, not a periodic re-check)
        t0 = time.monotonic()
        assert _subscribe(c, dave, "presence", call_id="back-" + c.call_id).status in (200, 202)
        deadline = time.monotonic() + 10
        while True:
            n = d.expect("NOTIFY")
            if (n.headers.get("Subscription-State") or "").startswith("active"):
                break
            assert time.monotonic() < deadline
        assert time.monotonic() - t0 < 3
        assert b">open<" in n.body
        body = _winfo_until(c, lambda b: b'status="active"' in b)
        assert f'event="approved" status="active">sip:{dave}@{DOMAIN}<'.encode() in body
    finally:
        c.close()
        d.close()
