"""XEP-0363 HTTP file upload on upload.<domain>: the XMPP service, its files and their expiry.

A client finds the service in the server's disco#items, reads its limits from disco#info and
asks it for a slot; the slot's PUT and GET URLs are served by upload/http.py on the [listen]
and [edge] upload listeners, over TLS only. Files expire after upload.expire_after; a periodic
task removes them, and the slots nobody used.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from standard_edition.config import Config
from standard_edition.core.jid import JID
from standard_edition.store.database import Database
from standard_edition.upload import store
from standard_edition.upload.http import UploadSite
from standard_edition.upload.ledger import Ledger, Slot, StoredFile
from standard_edition.upload.rules import NS_UPLOAD, Limits, Refused, parse_request, url_path
from standard_edition.xmpp.stanzas import C, error_reply, sub

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
NS_PING = "urn:xmpp:ping"
UPLOAD = "{" + NS_UPLOAD + "}"
MAX_THREADS = 4  # disk work of uploads and downloads at once

log = Logger(namespace="se.upload")


def base_url(configured: str, domain: str, listeners: tuple[Any, ...]) -> str:
    """The configured base, else https://upload.<domain>:<port of the first listener>."""
    if configured:
        return configured
    if not listeners:
        return ""
    port = listeners[0].port
    return f"https://upload.{domain}" + ("" if port == 443 else f":{port}")


class UploadService:
    def __init__(self, reactor: Any, cfg: Config, db: Database) -> None:
        self.reactor = reactor
        self.db = db
        self.domain = f"upload.{cfg.domain}"
        self.limits = Limits.from_config(cfg)
        self.ledger = Ledger(self.limits, reactor.seconds)
        self.dir = store.UploadDir(cfg.data_dir / "uploads")
        internal = base_url(cfg.upload_url, cfg.domain, cfg.listen.get("upload", ()))
        edge = base_url(cfg.upload_edge_url, cfg.domain, cfg.edge.get("upload", ()))
        # a side without its own listener gets the other's links
        self.urls = {"internal": internal or edge, "edge": edge or internal}
        self.policy: Any = None  # core/federation.py FederationPolicy: outside access
        self._pool = ThreadPool(minthreads=0, maxthreads=MAX_THREADS, name="upload")
        self._loop: LoopingCall | None = None
        self._expiring = False

    def run(self, fn: Any, *args: Any) -> Deferred[Any]:
        """Run blocking file work on the upload threads."""
        return deferToThreadPool(self.reactor, self._pool, fn, *args)

    @inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        """Load the kept files, tidy the folder, start the expiry task; fires with the count."""
        self._pool.start()
        # stopped with the reactor however it stops, even when a later listener fails to start
        self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        files = yield self.db.read(store.load_files)
        partial, orphans = yield self.run(self.dir.prepare, {f.token for f in files})
        if partial or orphans:
            log.info(
                "upload: removed {partial} unfinished and {orphans} unrecorded files",
                partial=partial,
                orphans=orphans,
            )
        self.ledger.load(files)
        self._loop = LoopingCall(self.expire)
        self._loop.clock = self.reactor
        d = self._loop.start(self._period(), now=True)
        d.addErrback(lambda f: log.failure("upload: the expiry task stopped", f))
        return len(files)

    def _period(self) -> float:
        # often enough that a file goes soon after its time, at least each minute for slots
        expire = self.limits.expire_after
        return float(max(1, min(60, expire // 4))) if expire else 60.0

    def site(self, guard: Any = None) -> UploadSite:
        """The HTTPS site for one set of listeners (guard: the edge's connection limits)."""
        return UploadSite(self, guard)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._pool.started:
            self._pool.stop()  # finishes the file work in progress first

    # -- expiry --------------------------------------------------------------------------------

    @inlineCallbacks
    def expire(self):  # type: ignore[no-untyped-def]
        """Remove the files whose time is up (row first, then file) and the unused slots."""
        if self._expiring:
            return  # the last round is still deleting
        self._expiring = True
        try:
            self.ledger.purge_slots()
            tokens = self.ledger.due()
            if tokens:
                yield self.db.run(store.delete_files, tokens)
                freed = self.ledger.remove(tokens)
                yield self.run(self.dir.remove, tokens)
                log.info("upload: {n} expired files removed ({b} bytes)", n=len(tokens), b=freed)
        except Exception:
            log.failure("upload: removing expired files failed; trying again later")
        finally:
            self._expiring = False

    # -- storing -------------------------------------------------------------------------------

    @inlineCallbacks
    def commit(self, slot: Slot):  # type: ignore[no-untyped-def]
        """The body is in place on disk: record it, or remove it if it cannot be recorded."""
        f: StoredFile = self.ledger.stored_file(slot)
        try:
            yield self.db.run(store.insert_file, f)
        except Exception:
            yield self.run(store.unlink, self.dir.path(f.token))
            raise
        self.ledger.stored(slot, f)
        log.info("upload: {owner} stored {size} bytes", owner=slot.owner, size=slot.size)
        return f

    def status(self) -> dict[str, Any]:
        return {
            **self.ledger.totals(),
            "max_file_size": self.limits.max_file_size,
            "quota": self.limits.quota,
            "expire_after": self.limits.expire_after,
            "url": self.urls["internal"],
        }

    # -- XMPP ----------------------------------------------------------------------------------

    def iq(self, stream: C2SProtocol, el: ET.Element, to: JID) -> ET.Element | None:
        """An iq addressed to upload.<domain> (xmpp/c2s.py routes it here)."""
        itype = el.get("type")
        if itype in ("result", "error"):
            return None
        if to.local is not None or to.resource is not None:
            return error_reply(el, "service-unavailable")
        if len(el) != 1:
            return error_reply(el, "bad-request", "an iq get/set carries exactly one child")
        child = el[0]
        if itype == "get" and child.tag == "{" + NS_DISCO_INFO + "}query":
            if child.get("node"):
                return error_reply(el, "item-not-found", "no such node")
            return self._info(el)
        if itype == "get" and child.tag == "{" + NS_DISCO_ITEMS + "}query":
            reply = _result(el)
            sub(reply, "{" + NS_DISCO_ITEMS + "}query")
            return reply
        if itype == "get" and child.tag == "{" + NS_PING + "}ping":
            return _result(el)
        if child.tag == UPLOAD + "request":
            if itype != "get":
                return error_reply(el, "bad-request", "a slot request is an iq get")
            return self._slot(stream, el, child)
        return error_reply(el, "service-unavailable")

    def _info(self, el: ET.Element) -> ET.Element:
        """XEP-0363 §3: identity store/file, the feature, and the size limit as a form."""
        reply = _result(el)
        q = sub(reply, "{" + NS_DISCO_INFO + "}query")
        identity = {"category": "store", "type": "file", "name": "HTTP File Upload"}
        sub(q, "{" + NS_DISCO_INFO + "}identity", identity)
        for feature in (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_UPLOAD):
            sub(q, "{" + NS_DISCO_INFO + "}feature", {"var": feature})
        form = sub(q, "{" + NS_DATA + "}x", {"type": "result"})
        field = sub(form, "{" + NS_DATA + "}field", {"var": "FORM_TYPE", "type": "hidden"})
        sub(field, "{" + NS_DATA + "}value", text=NS_UPLOAD)
        field = sub(form, "{" + NS_DATA + "}field", {"var": "max-file-size"})
        sub(field, "{" + NS_DATA + "}value", text=str(self.limits.max_file_size))
        return reply

    def _slot(self, stream: C2SProtocol, el: ET.Element, req: ET.Element) -> ET.Element:
        assert stream.jid is not None and stream.jid.local is not None
        owner = stream.jid.local
        origin = getattr(stream, "origin", "internal")
        if origin == "edge" and self.policy is not None and not self.policy.outside_access(owner):
            # DESIGN §7: without outside access a user gets nothing through the edge
            return error_reply(el, "forbidden", "this account may not upload from outside")
        try:
            parsed = parse_request(req.get("filename"), req.get("size"), req.get("content-type"))
            slot = self.ledger.grant(owner, parsed, origin)
        except Refused as e:
            reply = error_reply(el, e.condition, e.text)
            if e.max_file_size is not None:
                err = reply.find(C + "error")
                assert err is not None
                too_large = sub(err, UPLOAD + "file-too-large")
                sub(too_large, UPLOAD + "max-file-size", text=str(e.max_file_size))
            return reply
        base = self.urls.get(origin) or self.urls["internal"]
        reply = _result(el)
        out = sub(reply, UPLOAD + "slot")
        sub(out, UPLOAD + "put", {"url": base + url_path(slot.put_token, slot.filename)})
        sub(out, UPLOAD + "get", {"url": base + url_path(slot.get_token, slot.filename)})
        return reply


def _result(el: ET.Element) -> ET.Element:
    reply = ET.Element(C + "iq", {"type": "result", "id": el.get("id", "")})
    if el.get("from"):
        reply.set("to", el.get("from", ""))
    if el.get("to"):
        reply.set("from", el.get("to", ""))
    return reply
