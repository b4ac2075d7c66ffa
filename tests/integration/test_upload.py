"""XEP-0363 HTTP file upload end to end: slixmpp's xep_0363 plugin asks for slots, urllib PUTs
and GETs over TLS with the server's own certificate as the only trust anchor, and the link goes
to a colleague in a message."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from slixmpp.exceptions import IqError

from standard_edition import tls

from .server import DOMAIN, Server
from .xmppclient import Client, Sessions, next_matching

NS = "urn:xmpp:http:upload:0"
UPLOAD_TOML = "[upload]\nmax_file_size = 4096\nquota = 10000\n"
EDGE = "127.0.0.2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = Server(tmp_path_factory.mktemp("upload"), UPLOAD_TOML, upload=True, edge_host=EDGE).start()
    yield s
    s.stop()


# -- HTTPS as a client does it, with upload.<domain> resolved to the listener ------------------


class _Connection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, addresses: dict[int, str], **kw: Any) -> None:
        super().__init__(host, **kw)
        self.addresses = addresses

    def connect(self) -> None:
        # the URL names upload.example.test; the test's "DNS" says where that port listens
        sock = socket.create_connection((self.addresses[self.port], self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _Handler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, addresses: dict[int, str]) -> None:
        super().__init__(context=context)
        self.addresses = addresses

    def https_open(self, req: urllib.request.Request) -> Any:
        conn = partial(_Connection, addresses=self.addresses)
        return self.do_open(conn, req, context=self._context)  # type: ignore[attr-defined]


def https(server: Server) -> Callable[..., tuple[int, dict[str, str], bytes]]:
    """request(method, url, body=None, headers={}) -> (status, headers, body), verified TLS."""
    context = ssl.create_default_context(cafile=str(server.data_dir / "cert.pem"))
    addresses = {server.ports["upload"]: "127.0.0.1"}
    if "edge_upload" in server.ports:
        addresses[server.ports["edge_upload"]] = server.hosts["edge_upload"]
    opener = urllib.request.build_opener(_Handler(context, addresses))

    def request(
        method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with opener.open(req, timeout=20) as r:
                return r.status, dict(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers.items()), e.read()

    return request


async def uploader(ss: Sessions, user: str, **kw: Any) -> Client:
    c = ss.client(user, **kw)
    c.register_plugin("xep_0363")
    return await c.start()


async def slot(c: Client, server: Server, name: str, size: int, ctype: str | None) -> Any:
    iq = await c.plugin["xep_0363"].request_slot(
        f"upload.{server.domain}", name, size, ctype, timeout=10
    )
    s = iq["http_upload_slot"]
    return s["put"]["url"], s["get"]["url"]


async def refusal(c: Client, server: Server, name: str, size: int, ctype: str | None) -> Any:
    with pytest.raises(IqError) as e:
        await slot(c, server, name, size, ctype)
    return e.value.iq


def put(server: Server, url: str, body: bytes, ctype: str) -> Any:
    headers = {"Content-Type": ctype}
    return asyncio.to_thread(https(server), "PUT", url, body, headers)


def get(server: Server, url: str, method: str = "GET") -> Any:
    return asyncio.to_thread(https(server), method, url)


async def upload(c: Client, server: Server, name: str, data: bytes, ctype: str | None) -> str:
    """A slot for `data`, its PUT (201, sent as `ctype` or as bytes), and the link to GET."""
    put_url, get_url = await slot(c, server, name, len(data), ctype)
    assert (await put(server, put_url, data, ctype or "application/octet-stream"))[0] == 201
    return str(get_url)


# -- the tests -----------------------------------------------------------------------------------


def test_clients_discover_upload_with_its_size_limit(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            info = await c.plugin["xep_0363"].find_upload_service(timeout=10)
            assert info is not None and str(info["from"]) == f"upload.{server.domain}"
            assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
            forms = [f["values"] for f in info["disco_info"].iterables]
            assert {"FORM_TYPE": [NS], "max-file-size": "4096"} in forms

    run(go())


def test_picture_sent_as_link_reaches_colleague_with_its_bytes(server: Server, run: Any) -> None:
    alice, bob = server.new_users("alice", "bob")
    picture = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)

    async def go() -> None:
        async with Sessions(server) as ss:
            ca = await uploader(ss, alice)
            cb = await ss.login(bob)
            put_url, get_url = await slot(ca, server, "screen shot.png", len(picture), "image/png")
            assert urlsplit(get_url).hostname == f"upload.{server.domain}"
            assert urlsplit(put_url).port == server.ports["upload"]
            assert put_url != get_url  # the download link does not let anyone write
            status, _, _ = await get(server, get_url)
            assert status == 404  # nothing there before the PUT
            status, _, _ = await put(server, put_url, picture, "image/png")
            assert status == 201
            again, _, _ = await put(server, put_url, picture, "image/png")
            assert again == 404  # a slot takes one file only

            ca.send_message(mto=f"{bob}@{server.domain}", mbody=get_url, mtype="chat")
            msg = await next_matching(cb.inbox, lambda m: m["body"] == get_url)
            status, headers, body = await get(server, msg["body"])
            assert status == 200 and body == picture
            assert headers["Content-Type"] == "image/png"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert headers["Content-Disposition"].startswith("inline")
            status, headers, body = await get(server, get_url, "HEAD")
            assert (status, body, headers["Content-Length"]) == (200, b"", str(len(picture)))

            # anything but a picture is a download with its name, never shown as a page
            page = b"<script>alert(1)</script>"
            get_url = await upload(ca, server, "notes.html", page, "text/html")
            status, headers, body = await get(server, get_url)
            assert (status, body, headers["Content-Type"]) == (200, page, "text/html")
            assert headers["Content-Disposition"].startswith('attachment; filename="notes.html"')

    run(go())
    status = json.loads(server.ctl_ok("status", "--json").stdout)["upload"]
    assert status["files"] >= 2 and status["bytes"] >= len(picture)


def test_file_over_the_size_cap_is_refused_with_the_limit(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            iq = await refusal(c, server, "film.mp4", 5000, "video/mp4")
            assert iq["error"]["condition"] == "not-acceptable"
            limit = iq.xml.find(
                f"{{jabber:client}}error/{{{NS}}}file-too-large/{{{NS}}}max-file-size"
            )
            assert limit is not None and limit.text == "4096"

    run(go())


def test_executables_are_refused_by_name_and_by_type(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            iq = await refusal(c, server, "setup.exe", 100, "application/octet-stream")
            assert iq["error"]["condition"] == "not-acceptable"
            assert ".exe" in iq["error"]["text"]
            iq = await refusal(c, server, "Invoice.PDF.Exe. ", 100, None)
            assert iq["error"]["condition"] == "not-acceptable"
            iq = await refusal(c, server, "tool.bin", 100, "application/x-msdownload")
            assert "application/x-msdownload" in iq["error"]["text"]

    run(go())


def test_quota_counts_stored_files_and_open_slots(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")
    data = os.urandom(4000)

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            await upload(c, server, "a.bin", data, "application/octet-stream")
            await slot(c, server, "b.bin", len(data), "application/octet-stream")  # unused yet
            iq = await refusal(c, server, "c.bin", len(data), "application/octet-stream")
            assert iq["error"]["condition"] == "resource-constraint"
            assert iq["error"]["type"] == "wait"

    run(go())


def test_put_must_match_the_slot(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")
    data = os.urandom(100)

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            put_url, get_url = await slot(c, server, "a.txt", len(data), "text/plain")
            assert (await put(server, put_url, data[:50], "text/plain"))[0] == 400
            assert (await put(server, put_url, data + data, "text/plain"))[0] == 413
            assert (await put(server, put_url, data, "image/png"))[0] == 415
            assert (await get(server, get_url))[0] == 404  # nothing was kept
            assert (await put(server, put_url, data, "text/plain"))[0] == 201
            status, _, body = await get(server, get_url)
            assert (status, body) == (200, data)
            wrong = put_url.replace("/upload/", "/upload/x", 1)
            assert (await put(server, wrong, data, "text/plain"))[0] == 404

    run(go())


def test_malformed_requests_are_bad_requests(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            for name, size, ctype in (
                ("../etc/passwd", 10, "text/plain"),
                ("a.txt", 0, "text/plain"),
                ("a.txt", 10, "text/plain\r\nX-Evil: 1"),
            ):
                iq = await refusal(c, server, name, size, ctype)
                assert iq["error"]["condition"] == "bad-request", name

    run(go())


def test_plain_http_gets_no_file(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")
    data = os.urandom(200)

    async def go() -> str:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            return await upload(c, server, "a.bin", data, None)

    get_url = run(go())
    path = urlsplit(get_url).path
    with socket.create_connection(("127.0.0.1", server.ports["upload"]), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: upload.example.test\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert b"HTTP/1.1 200" not in answer and data not in answer


def test_edge_session_gets_links_on_the_edge_listener(server: Server, run: Any) -> None:
    alice, bob = server.new_users("alice", "bob")
    data = os.urandom(1000)

    async def go() -> None:
        async with Sessions(server) as ss:
            ca = await uploader(ss, alice, listener="edge_c2s")
            put_url, get_url = await slot(ca, server, "report.pdf", len(data), "application/pdf")
            assert urlsplit(put_url).port == server.ports["edge_upload"]
            assert (await put(server, put_url, data, "application/pdf"))[0] == 201
            status, headers, body = await get(server, get_url)  # from outside
            assert (status, body) == (200, data)
            assert headers["Content-Disposition"].startswith("attachment")
            # the same file on the LAN listener
            lan = get_url.replace(f":{server.ports['edge_upload']}/", f":{server.ports['upload']}/")
            assert (await get(server, lan))[2] == data
            cb = await uploader(ss, bob)  # a LAN session: LAN links
            put_url, _ = await slot(cb, server, "x.pdf", 10, "application/pdf")
            assert urlsplit(put_url).port == server.ports["upload"]

    run(go())


def test_files_expire_and_are_removed(make_server: Callable[..., Server], run: Any) -> None:
    server = make_server('[upload]\nexpire_after = "1s"\n', upload=True)
    (alice,) = server.new_users("alice")
    data = os.urandom(300)

    async def go() -> str:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            return await upload(c, server, "a.bin", data, None)

    get_url = run(go())
    token = urlsplit(get_url).path.split("/")[2]
    stored = server.data_dir / "uploads" / token
    end = time.monotonic() + 30
    while True:
        status = json.loads(server.ctl_ok("status", "--json").stdout)["upload"]
        gone = not stored.exists() and status["files"] == 0
        if gone or time.monotonic() > end:
            break
        time.sleep(0.3)
    assert gone, f"{stored} still there: {status}"
    assert https(server)("GET", get_url)[0] == 404


def test_no_upload_service_without_a_listener(make_server: Callable[..., Server], run: Any) -> None:
    server = make_server()
    (alice,) = server.new_users("alice")

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            items = await c.plugin["xep_0030"].get_items(jid=server.domain, timeout=10)
            jids = {str(i[0]) for i in items["disco_items"]["items"]}
            assert f"conference.{server.domain}" in jids
            assert f"upload.{server.domain}" not in jids
            assert await c.plugin["xep_0363"].find_upload_service(timeout=10) is None

    run(go())
    assert not (server.data_dir / "uploads").exists()


def test_large_file_streams_and_a_cut_upload_leaves_nothing(
    make_server: Callable[..., Server], run: Any
) -> None:
    server = make_server("[upload]\nmax_file_size = 33554432\n", upload=True)
    (alice,) = server.new_users("alice")
    data = os.urandom(12 * 1024 * 1024)
    incoming = server.data_dir / "uploads" / "incoming"

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await uploader(ss, alice)
            put_url, get_url = await slot(c, server, "disk.img", len(data), None)
            # half a body, then the connection drops: nothing is kept, the slot stays usable
            await asyncio.to_thread(_cut_put, server, put_url, data)
            end = time.monotonic() + 20
            while any(incoming.iterdir()) and time.monotonic() < end:
                await asyncio.sleep(0.1)
            assert not any(incoming.iterdir())
            assert (await get(server, get_url))[0] == 404
            pinged = asyncio.ensure_future(_pings(c, 10))
            assert (await put(server, put_url, data, "application/octet-stream"))[0] == 201
            status, headers, body = await get(server, get_url)
            assert status == 200 and body == data
            assert headers["Content-Disposition"].startswith('attachment; filename="disk.img"')
            assert await pinged  # the server kept answering XMPP during the transfers

    run(go(), timeout=120)


def _cut_put(server: Server, url: str, data: bytes) -> None:
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=str(server.data_dir / "cert.pem"))
    raw = socket.create_connection(("127.0.0.1", server.ports["upload"]), timeout=20)
    with context.wrap_socket(raw, server_hostname=parts.hostname) as s:
        s.sendall(
            f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Length: {len(data)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        s.sendall(data[: len(data) // 2])


async def _pings(c: Client, n: int) -> bool:
    for _ in range(n):
        await c.plugin["xep_0199"].ping(timeout=10)
    return True


def _served_certificate(server: Server) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", server.ports["upload"]), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=f"upload.{server.domain}") as s,
    ):
        cert = s.getpeercert(binary_form=True)
    assert cert
    return cert


def test_renewed_certificate_reaches_the_upload_listener(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.make_self_signed(DOMAIN, cert, key)
    server = make_server(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n', upload=True)
    first = _served_certificate(server)
    assert first == tls.certificate_der(cert)
    tls.make_self_signed(DOMAIN, cert, key)  # renewed in place, then systemctl reload
    seen = server.log_path.read_text(errors="replace").count("reload: done")
    os.kill(server.pid, signal.SIGHUP)
    end = time.monotonic() + 15
    while server.log_path.read_text(errors="replace").count("reload: done") <= seen:
        assert time.monotonic() < end, server.log_tail()
        time.sleep(0.1)
    renewed = _served_certificate(server)
    assert renewed != first and renewed == tls.certificate_der(cert)


def test_messages_to_the_upload_service_bounce_at_once(server: Server, run: Any) -> None:
    (alice,) = server.new_users("alice")
    service = f"upload.{DOMAIN}"

    async def go() -> None:
        async with Sessions(server) as ss:
            c = await ss.login(alice)
            c.send_presence(pto=service)  # no presence there: ignored, not sent to a server
            c.send_message(mto=service, mbody="hello?", mtype="chat")
            err = await next_matching(
                c.inbox, lambda m: m["type"] == "error" and m["from"].bare == service
            )
            assert err["error"]["condition"] == "service-unavailable"
            assert err["error"]["type"] == "cancel"

    run(go())


def test_backup_keeps_uploads_and_a_restore_without_them_drops_their_links(
    make_server: Callable[..., Server], run: Any, tmp_path: Path
) -> None:
    """README: a backup holds the uploaded files unless --no-uploads; a restore keeps only the
    uploads whose files it has, so the others answer 404 and free their owner's quota."""
    s = make_server(UPLOAD_TOML, upload=True)
    (alice,) = s.new_users("alice")
    files = [os.urandom(3000), os.urandom(3500)]

    async def upload() -> list[str]:
        async with Sessions(s) as ss:
            c = await uploader(ss, alice)
            links = []
            for n, data in enumerate(files):
                put_url, get_url = await slot(c, s, f"f{n}.bin", len(data), None)
                assert (await put(s, put_url, data, "application/octet-stream"))[0] == 201
                links.append(get_url)
            return links

    links = run(upload())
    full, small = tmp_path / "full.tar.gz", tmp_path / "small.tar.gz"
    made = json.loads(s.ctl_ok("backup", str(full), "--json").stdout)
    assert made["uploads"] == {"included": True, "files": 2, "bytes": 6500}
    made = json.loads(s.ctl_ok("backup", str(small), "--no-uploads", "--json").stdout)
    assert made["uploads"] == {"included": False, "files": 0, "bytes": 0}
    assert s.stop() == 0

    def restored(backup: Path) -> tuple[Server, dict[str, Any]]:
        fresh = make_server(UPLOAD_TOML, start=False, upload=True)
        fresh.passwords.update(s.passwords)
        result = json.loads(fresh.ctl_ok("restore", str(backup), "--json").stdout)
        fresh.start()
        return fresh, result

    def moved(server: Server, url: str) -> str:
        return url.replace(f":{s.ports['upload']}/", f":{server.ports['upload']}/")

    # with the files: every link works again, and the quota counts them
    one, result = restored(full)
    assert result["uploads"] == {"files": 2, "links_dropped": 0}
    for url, data in zip(links, files, strict=True):
        status, _, body = https(one)("GET", moved(one, url))
        assert (status, body) == (200, data)
    status = json.loads(one.ctl_ok("status", "--json").stdout)["upload"]
    assert (status["files"], status["bytes"]) == (2, 6500)
    assert one.stop() == 0

    # without them: the links answer 404, and the user's quota is free again
    two, result = restored(small)
    assert result["uploads"] == {"files": 0, "links_dropped": 2}
    for url in links:
        assert https(two)("GET", moved(two, url))[0] == 404
    status = json.loads(two.ctl_ok("status", "--json").stdout)["upload"]
    assert (status["files"], status["bytes"]) == (0, 0)

    async def quota_is_free() -> None:
        async with Sessions(two) as ss:
            c = await uploader(ss, alice)
            for n in range(2):  # 2 x 4000 bytes fit in 10000 only if nothing else counts
                put_url, _ = await slot(c, two, f"new{n}.bin", 4000, None)
                status, _, _ = await put(two, put_url, os.urandom(4000), "application/octet-stream")
                assert status == 201

    run(quota_is_free())
