"""XEP-0363 upload rules, slot ledger, body writer and service answers, without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from standard_edition import config
from standard_edition.core.jid import parse_jid
from standard_edition.upload import http, rules
from standard_edition.upload.ledger import Ledger
from standard_edition.upload.rules import Limits, Refused, parse_request
from standard_edition.upload.service import UploadService, base_url

LIMITS = Limits(
    max_file_size=1000,
    quota=2500,
    expire_after=3600,
    blocked_extensions=frozenset({".exe", ".bat"}),
    blocked_types=frozenset({"application/x-msdownload", "text/*"}),
)


def refusal(req: rules.SlotRequest, used: int = 0, pending: int = 0) -> Refused:
    with pytest.raises(Refused) as e:
        rules.check(req, LIMITS, used, pending)
    return e.value


# -- rules -------------------------------------------------------------------------------------


def test_request_fields_are_checked_and_a_missing_type_is_guessed() -> None:
    req = parse_request("holiday photo.JPG", "1234", None)
    assert (req.filename, req.size, req.content_type, req.declared) == (
        "holiday photo.JPG",
        1234,
        "image/jpeg",
        False,
    )
    assert parse_request("x.bin", "5", "Image/PNG").declared
    assert parse_request("x", "5", None).content_type == "application/octet-stream"
    assert parse_request("a.txt", "5", 'text/plain; charset="utf-8"').content_type.endswith('"')
    for name, size, ctype in (
        ("", "5", None),
        ("a/b.txt", "5", None),
        ("a\\b.txt", "5", None),
        ("a\nb", "5", None),
        ("..", "5", None),
        ("x" * 256, "5", None),
        ("a.txt", "0", None),
        ("a.txt", "-3", None),
        ("a.txt", "1e3", None),
        ("a.txt", None, None),
        ("a.txt", "5", "text"),
        ("a.txt", "5", "text/plain\r\nSet-Cookie: x=y"),
    ):
        with pytest.raises(Refused) as e:
            parse_request(name, size, ctype)
        assert e.value.condition == "bad-request", (name, size, ctype)


def test_file_type_filter_reads_the_last_extension_as_windows_does() -> None:
    assert rules.extension("Setup.EXE") == ".exe"
    assert rules.extension("invoice.pdf.exe. . ") == ".exe"
    assert rules.extension("README") == ""
    assert rules.extension("archive.tar.gz") == ".gz"
    assert "exe" in refusal(parse_request("a.exe", "10", "image/png")).text
    assert refusal(parse_request("run.bat ", "10", None)).condition == "not-acceptable"
    assert "x-msdownload" in refusal(parse_request("a", "10", "application/x-msdownload")).text
    assert refusal(parse_request("a.md", "10", "text/markdown")).condition == "not-acceptable"
    rules.check(parse_request("photo.exe.png", "10", "image/png"), LIMITS, 0, 0)


def test_size_cap_and_quota() -> None:
    too_big = refusal(parse_request("a.png", "1001", None))
    assert (too_big.condition, too_big.max_file_size) == ("not-acceptable", 1000)
    over = refusal(parse_request("a.png", "600", None), used=2000)
    assert over.condition == "resource-constraint" and "500 are left" in over.text
    rules.check(parse_request("a.png", "500", None), LIMITS, 2000, 0)
    busy = refusal(parse_request("a.png", "1", None), pending=rules.MAX_PENDING_SLOTS)
    assert busy.condition == "resource-constraint"


def test_urls_carry_the_token_and_only_it_is_read_back() -> None:
    token = "A" * 32
    path = rules.url_path(token, "my file/ä.png")
    assert path == f"/upload/{token}/my%20file%2F%C3%A4.png"
    assert rules.token_of(path.encode()) == token
    assert rules.token_of(path.encode() + b"?x=1") == token
    for bad in (b"/upload/short/x", b"/upload/../../etc/passwd", b"/other/" + b"A" * 32 + b"/x"):
        assert rules.token_of(bad) is None
    assert rules.token_of(b"/upload/" + b"A" * 32) is None


def test_pictures_show_in_place_everything_else_downloads() -> None:
    assert rules.content_disposition("a.png", "image/png").startswith('inline; filename="a.png"')
    svg = rules.content_disposition("a.svg", "image/svg+xml")
    assert svg.startswith("attachment")
    odd = rules.content_disposition('ré"sumé.pdf', "application/pdf")
    assert odd == "attachment; filename=\"r__sum_.pdf\"; filename*=UTF-8''r%C3%A9%22sum%C3%A9.pdf"


# -- ledger --------------------------------------------------------------------------------------


def test_slot_is_single_use_and_a_failed_put_gives_it_back() -> None:
    clock = Clock()
    ledger = Ledger(LIMITS, clock.seconds)
    slot = ledger.grant("alice", parse_request("a.png", "800", None), "internal")
    assert slot.put_token != slot.get_token and len(slot.put_token) >= 32
    assert ledger.used("alice") == (800, 1)
    assert ledger.claim(slot.put_token) == slot
    assert ledger.slot_state(slot.put_token) == "busy"
    assert ledger.claim(slot.put_token) is None
    ledger.release(slot)
    assert ledger.claim(slot.put_token) == slot
    f = ledger.stored_file(slot)
    ledger.stored(slot, f)
    assert ledger.slot_state(slot.put_token) == "gone"
    assert ledger.lookup(slot.get_token) == f and f.expires == 3600
    assert ledger.used("alice") == (800, 0)
    assert ledger.totals()["files"] == 1


def test_unused_slots_and_old_files_expire() -> None:
    clock = Clock()
    ledger = Ledger(LIMITS, clock.seconds)
    unused = ledger.grant("bob", parse_request("a.png", "900", None), "internal")
    used = ledger.grant("bob", parse_request("b.png", "900", None), "edge")
    ledger.claim(used.put_token)
    ledger.stored(used, ledger.stored_file(used))
    # the open slot reserves its size: a third file does not fit the quota of 2500
    with pytest.raises(Refused):
        ledger.grant("bob", parse_request("c.png", "900", None), "internal")
    clock.advance(rules.SLOT_LIFETIME)
    assert ledger.claim(unused.put_token) is None
    assert ledger.purge_slots() == 1
    ledger.grant("bob", parse_request("c.png", "900", None), "internal")
    clock.advance(3600)
    assert ledger.lookup(used.get_token) is None  # not served once due, even before removal
    assert ledger.due() == [used.get_token]
    assert ledger.remove(ledger.due()) == 900
    assert ledger.used("bob")[0] == 0  # the slot of c.png has expired too by now


# -- the body writer -----------------------------------------------------------------------------


class ManualThreads:
    """Stands in for the upload threads: calls run when the test says so, in order."""

    def __init__(self) -> None:
        self.queue: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, fn: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queue.append((fn, args, d))
        return d

    def step(self) -> None:
        fn, args, d = self.queue.pop(0)
        try:
            result = fn(*args)
        except Exception as e:
            d.errback(e)
        else:
            d.callback(result)

    def drain(self) -> None:
        while self.queue:
            self.step()


def test_body_is_written_in_order_with_backpressure(tmp_path: Path) -> None:
    threads = ManualThreads()
    events: list[str] = []
    (tmp_path / "in").mkdir()
    writer = http.BodyWriter(
        threads,
        tmp_path / "in" / "t",
        tmp_path / "t",
        lambda: events.append("pause"),
        lambda: events.append("resume"),
    )
    chunks = [bytes([i]) * (256 * 1024) for i in range(8)]  # 2 MiB
    for c in chunks:
        writer.write(c)
    assert events == ["pause"]  # one write in flight, the rest waiting: stop reading
    assert len(threads.queue) == 1  # never two writes at once
    threads.drain()
    assert events == ["pause", "resume"]
    done = writer.close()
    sizes: list[int] = []
    done.addCallback(sizes.append)
    threads.drain()
    assert sizes == [2 * 1024 * 1024]
    assert (tmp_path / "t").read_bytes() == b"".join(chunks)
    assert not (tmp_path / "in" / "t").exists()


def test_aborted_body_leaves_no_file(tmp_path: Path) -> None:
    threads = ManualThreads()
    (tmp_path / "in").mkdir()
    part = tmp_path / "in" / "t"
    writer = http.BodyWriter(threads, part, tmp_path / "t", lambda: None, lambda: None)
    writer.write(b"x" * 1000)
    threads.step()  # the first write opened the file
    writer.write(b"y" * 1000)  # in flight when the connection drops
    writer.abort()
    threads.drain()
    assert not part.exists() and not (tmp_path / "t").exists()


# -- the service's answers -----------------------------------------------------------------------


class FakeStream:
    def __init__(self, origin: str) -> None:
        self.jid = parse_jid("alice@example.test/phone")
        self.origin = origin


class Policy:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    def outside_access(self, username: str) -> bool:
        return self.allowed


def service(tmp_path: Path, edge_url: str = "") -> UploadService:
    path = tmp_path / "config.toml"
    path.write_text(
        'domain = "example.test"\n[listen]\nupload = ["127.0.0.1:5443"]\n'
        '[edge]\nupload = ["*:443"]\n[upload]\nmax_file_size = 1000\n'
        f'edge_url = "{edge_url}"\n'
    )
    return UploadService(Clock(), config.load(path), None)  # type: ignore[arg-type]


def slot_iq(size: int = 10, name: str = "a.png") -> ET.Element:
    iq = ET.Element(
        "{jabber:client}iq",
        {
            "type": "get",
            "id": "s1",
            "from": "alice@example.test/phone",
            "to": "upload.example.test",
        },
    )
    ET.SubElement(iq, f"{{{rules.NS_UPLOAD}}}request", {"filename": name, "size": str(size)})
    return iq


def test_edge_sessions_need_outside_access_and_get_edge_links(tmp_path: Path) -> None:
    svc = service(tmp_path)
    to = parse_jid("upload.example.test")
    svc.policy = Policy(False)
    denied = svc.iq(FakeStream("edge"), slot_iq(), to)  # type: ignore[arg-type]
    assert denied is not None and denied.get("type") == "error"
    assert (
        denied.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden")
        is not None
    )
    lan = svc.iq(FakeStream("internal"), slot_iq(), to)  # type: ignore[arg-type]
    assert lan is not None and lan.get("type") == "result"
    put = lan.find(f"{{{rules.NS_UPLOAD}}}slot/{{{rules.NS_UPLOAD}}}put")
    assert put is not None and put.get("url", "").startswith(
        "https://upload.example.test:5443/upload/"
    )
    svc.policy = Policy(True)
    edge = svc.iq(FakeStream("edge"), slot_iq(), to)  # type: ignore[arg-type]
    assert edge is not None
    get = edge.find(f"{{{rules.NS_UPLOAD}}}slot/{{{rules.NS_UPLOAD}}}get")
    assert get is not None and get.get("url", "").startswith("https://upload.example.test/upload/")


def test_too_large_answer_carries_the_limit(tmp_path: Path) -> None:
    svc = service(tmp_path, edge_url="https://files.example.org")
    assert svc.urls["edge"] == "https://files.example.org"
    reply = svc.iq(FakeStream("internal"), slot_iq(size=2000), parse_jid("upload.example.test"))  # type: ignore[arg-type]
    assert reply is not None
    ns = rules.NS_UPLOAD
    limit = reply.find(f"{{jabber:client}}error/{{{ns}}}file-too-large/{{{ns}}}max-file-size")
    assert limit is not None and limit.text == "1000"
    assert reply.find("{jabber:client}error").get("type") == "modify"  # type: ignore[union-attr]


def test_base_url_follows_the_first_listener() -> None:
    a = config.Address("*", 5443)
    assert base_url("", "example.test", (a,)) == "https://upload.example.test:5443"
    assert (
        base_url("", "example.test", (config.Address("*", 443),)) == "https://upload.example.test"
    )
    assert base_url("https://x.example", "example.test", (a,)) == "https://x.example"
    assert base_url("", "example.test", ()) == ""


# -- config ----------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "c.toml"
    path.write_text('domain = "example.test"\n' + text)
    return config.load(path)


def test_upload_config_defaults_and_values(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.listen["upload"] == () and cfg.edge["upload"] == ()  # off unless configured
    assert ".exe" in cfg.upload_blocked_extensions and cfg.upload_expire_after == 30 * 86400
    cfg = load(
        tmp_path,
        '[upload]\nexpire_after = "12h"\nblocked_extensions = ["EXE", ".Bat"]\n'
        'blocked_types = ["Video/*"]\nurl = "https://files.example.org/"\nquota = 0\n',
    )
    assert cfg.upload_expire_after == 12 * 3600
    assert cfg.upload_blocked_extensions == (".exe", ".bat")
    assert cfg.upload_blocked_types == ("video/*",)
    assert cfg.upload_url == "https://files.example.org" and cfg.upload_quota == 0
    assert load(tmp_path, '[upload]\nexpire_after = "0"\n').upload_expire_after == 0


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('expire_after = "30"', "upload.expire_after"),
        ('expire_after = "3w"', "upload.expire_after"),
        ('url = "http://upload.example.test"', "upload.url"),
        ('edge_url = "https://upload.example.test/files"', "upload.edge_url"),
        ('url = "https://upload.example.test:99999"', "upload.url"),
        ('blocked_types = ["exe"]', "upload.blocked_types"),
        ('blocked_extensions = ["."]', "upload.blocked_extensions"),
        ("max_file_size = 0", "upload.max_file_size"),
    ],
)
def test_bad_upload_config_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        load(tmp_path, f"[upload]\n{line}\n")
    assert str(e.value).startswith(key)
