"""The server: builds the store, the core and the listeners on one reactor, and stops them."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import sqlite_utils
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger, globalLogPublisher
from zope.interface import implementer

from standard_edition import __version__, tls
from standard_edition.archive.policy import from_config as archive_policy
from standard_edition.archive.service import Archive
from standard_edition.config import Address, Config, ConfigError, load
from standard_edition.control.server import listen_control
from standard_edition.core.accounts import Accounts
from standard_edition.core.admin import Admin
from standard_edition.core.directory import Directory
from standard_edition.core.events import CounterFeed, EventBus
from standard_edition.core.federation import FederationPolicy
from standard_edition.core.history import MessageHistory
from standard_edition.core.logring import LogRing
from standard_edition.core.offline import OfflineStore
from standard_edition.core.roster import Rosters
from standard_edition.core.router import Router
from standard_edition.core.sessions import SessionRegistry
from standard_edition.core.settings import Settings
from standard_edition.core.url_filter import from_settings as url_filter_in_force
from standard_edition.edge.listeners import Edge, start_edge
from standard_edition.pep import attach as attach_pep
from standard_edition.pep import federate as federate_pep
from standard_edition.pep.avatar import attach as attach_avatars
from standard_edition.pep.service import PepService
from standard_edition.presence.service import PresenceService
from standard_edition.sip.service import SipService
from standard_edition.sip.transport import SipDatagram, SipStreamFactory
from standard_edition.store.backup import Snapshots
from standard_edition.store.database import Database
from standard_edition.upload.service import UploadService
from standard_edition.xmpp.c2s import C2SContext, C2SFactory
from standard_edition.xmpp.iq import IqHandlers
from standard_edition.xmpp.muc import MucService
from standard_edition.xmpp.muc_federation import FederatedRooms
from standard_edition.xmpp.partner_rooms import PartnerRooms
from standard_edition.xmpp.vcard import VCards, remote_card

log = Logger(namespace="se")


class StartupError(Exception):
    """The server cannot start; str() is the one line the admin sees."""


class Server:
    def __init__(self, reactor: Any, cfg: Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.db = Database(reactor, cfg.data_dir / "se.sqlite3")
        self.ports: list[tuple[str, Any]] = []
        self.control_port: Any = None
        self.c2s_contexts: list[C2SContext] = []
        self.router: Router | None = None
        self.archive: Archive | None = None
        self.tls_options: CurrentTLSOptions | None = None
        self.sip: SipService | None = None
        self.edge: Edge | None = None
        self.certificate: tuple[Path, Path] | None = None  # (cert, key) PEM paths in use
        self.snapshots: Snapshots | None = None
        self.upload: UploadService | None = None  # XEP-0363, when an upload listener is set
        self.vcards: VCards | None = None
        self.pep: PepService | None = None
        self.log_ring = LogRing()  # recent log lines for `se-ctl log` and the console
        self.events = EventBus()  # live events for control subscribers (se-ctl events, console)
        self.counter_feed: CounterFeed | None = None

    @defer.inlineCallbacks
    def start(self):  # type: ignore[no-untyped-def]
        cfg = self.cfg
        globalLogPublisher.addObserver(self.log_ring)
        self.log_ring.publish = self._publish_log_line
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as e:
            raise StartupError(f"data_dir: cannot create {cfg.data_dir}: {e.strerror}") from None
        try:
            cert, key = yield self.reactor_thread(tls.ensure_certificate, cfg, log)
            self.certificate = (cert, key)
            # one swappable object for every listener, so that reload() reaches them all
            tls_options = self.tls_options = CurrentTLSOptions(cert, key)
            try:
                end_point: bytes | None = tls.server_end_point_hash(tls.certificate_der(cert))
            except ValueError:
                # RFC 5929 §4.1 defines no hash for e.g. Ed25519 certificates
                end_point = None
        except ConfigError as e:
            raise StartupError(str(e)) from None
        try:
            version = yield self.db.open()
        except Exception as e:
            raise StartupError(f"data_dir: cannot open the database {self.db.path}: {e}") from None
        log.info("store {path} at schema version {version}", path=self.db.path, version=version)
        secret = yield self.db.run(_decoy_secret)

        accounts = Accounts(self.db, cfg.domain)
        rosters = Rosters(self.db)
        offline = OfflineStore(self.db)
        n_users = yield accounts.load()
        yield rosters.load()
        yield offline.load()
        settings = Settings(self.db)
        stored = yield settings.load()
        if "im.offline" in stored:
            log.info(
                "im.offline is {v} (set with se-ctl; `se-ctl config reset im.offline` "
                "returns to config.toml)",
                v=stored["im.offline"],
            )
        presence = PresenceService(self.reactor, self.db, cfg.domain, cfg.privacy_default)
        yield presence.load()
        presence.events = self.events
        sessions = SessionRegistry(self.events)
        router = Router(
            cfg.domain,
            accounts,
            rosters,
            sessions,
            offline,
            presence,
            offline_enabled=settings.get("im.offline", cfg.im_offline),
        )
        self.router = router
        # the IM URL filter (DESIGN §8), counting in the router's counters
        router.url_filter = url_filter_in_force(cfg, settings, router.counters)
        router.history = MessageHistory(self.reactor, self.db)
        # the compliance archive: its own file, its own writer thread (DESIGN §6)
        archive = Archive(
            self.reactor,
            cfg.archive_database,
            cfg.domain,
            archive_policy(cfg),
            settings,
            protocol_of=lambda jid: ep.protocol if (ep := sessions.get(jid)) else "xmpp",
            origin_of=lambda jid: getattr(sessions.get(jid), "origin", "internal"),
        )
        try:
            yield archive.open()
        except Exception as e:
            raise StartupError(
                f"data_dir: cannot open the archive {cfg.archive_database}: {e}"
            ) from None
        self.archive = router.archive = archive
        iq = IqHandlers(
            cfg.domain, version=cfg.xmpp_version, offline=lambda: router.offline_enabled
        )
        # XEP-0054 cards with XEP-0153 hashes in presence, and the XEP-0055 directory
        vcards = self.vcards = VCards(self.db, accounts, router, cfg.vcard_max_size)
        yield vcards.load()
        iq.vcards = vcards
        iq.directory = Directory(accounts, vcards.name_and_email)
        # XEP-0163 PEP for every account, XEP-0049 private storage, bookmarks (pep/)
        pep = self.pep = PepService(self.reactor, self.db, router)
        n_nodes = yield pep.load()
        attach_pep(iq, pep)
        attach_avatars(iq, pep, vcards)  # XEP-0398: the PEP avatar and the vCard PHOTO agree
        if n_nodes:
            log.info("pep: {n} nodes", n=n_nodes)
        self.muc = MucService(cfg.domain, router, self.db)
        self.muc.conferences.events = self.events  # rooms and occupants (topic "rooms")
        vcards.photo_listeners.append(self.muc.photo_changed)
        n_rooms = yield self.muc.load()
        if n_rooms:
            log.info("conference: {n} persistent rooms", n=n_rooms)

        def context(direct_tls: bool, origin: str = "internal", edge: Any = None) -> C2SContext:
            ctx = C2SContext(
                reactor=self.reactor,
                router=router,
                domain=cfg.domain,
                tls_options=tls_options,
                server_end_point=end_point,
                decoy_secret=secret,
                max_stanza_size=cfg.max_stanza_size,
                iq=iq,
                direct_tls=direct_tls,
                muc=self.muc,
                pep=pep,
                resume_timeout=cfg.resume_timeout,
                origin=origin,
                edge=edge,
            )
            self.c2s_contexts.append(ctx)
            return ctx

        starttls, direct = context(False), context(True)
        for addr in cfg.listen["c2s"]:
            self._listen("c2s", addr, C2SFactory(starttls))
        for addr in cfg.listen["c2s_tls"]:
            self._listen("c2s_tls", addr, C2SFactory(direct), tls_options)
        if cfg.listen["sip"] or cfg.listen["sip_tls"] or cfg.edge["sip_tls"]:
            yield self._start_sip(router, tls_options)
        # DESIGN §7: remote users and federation, on the outside address
        policy = router.federation = FederationPolicy(cfg, settings)
        self.edge = start_edge(
            self.reactor,
            cfg,
            router,
            policy,
            context,
            self._listen,
            tls_options,
            (cert, key),
            sip=self.sip,
        )
        for ctx in self.c2s_contexts:
            ctx.s2s = self.edge.s2s
        if self.edge.s2s is not None:
            FederatedRooms(self.edge.s2s, self.muc, router, policy)  # partners in our rooms
            PartnerRooms(self.edge.s2s, router, policy)  # our users in partners' rooms
        if self.edge.s2s is not None:
            self.edge.s2s.account_iq = partial(remote_card, vcards)
            federate_pep(self.edge.s2s, pep)  # partners read open nodes, hear of changes
        if cfg.listen["upload"] or cfg.edge["upload"]:
            yield self._start_upload(iq, policy, tls_options)

        self.snapshots = Snapshots(
            self.reactor,
            cfg.data_dir,
            self._backup_databases,
            self._backup_files,
            self._describe,
            uploads=cfg.data_dir / "uploads",  # upload/store.py's folder
        )
        self.snapshots.remove_stale()
        admin = Admin(
            cfg,
            router,
            self.listeners,
            settings,
            rooms_listing=self.muc.listing,
            archive=archive,
            snapshots=self.snapshots,
            certificate_sha256=lambda: tls_options.fingerprint,
            store_paths=lambda: [self.db.path, cfg.archive_database],
        )
        admin.edge = self.edge
        admin.log_ring = self.log_ring
        admin.upload = self.upload
        admin.pep = pep
        try:
            self.control_port = listen_control(
                self.reactor,
                cfg.control_socket,
                admin,
                log=log,
                events=self.events,
                log_last=lambda: self.log_ring.seq,
            )
        except (OSError, CannotListenError) as e:
            raise StartupError(
                f"data_dir: cannot open the control socket {cfg.control_socket}: {e}"
            ) from None
        self.counter_feed = CounterFeed(
            self.reactor,
            self.events,
            lambda: {
                "uptime": int(self.reactor.seconds() - admin.started),
                "counters": dict(router.counters),
                "sessions": router.sessions.counts_by_protocol(),
                # the PEP counters only: its node count walks every account
                "pep": dict(pep.counters),
            },
        )
        self.counter_feed.start()
        log.info(
            "serving {domain} for {n} users; data in {data}",
            domain=cfg.domain,
            n=n_users,
            data=cfg.data_dir,
        )
        return self

    def _publish_log_line(self, line: dict[str, Any]) -> None:
        # called on whichever thread logged: the bus is the reactor's, so hop over to it
        if self.events.wants("log"):
            self.reactor.callFromThread(self.events.publish, "log", line)

    # -- what a backup holds (store/backup.py) -------------------------------------------------

    def _backup_databases(self) -> dict[str, Database]:
        dbs = {"se.sqlite3": self.db}
        if self.archive is not None:
            dbs["archive.sqlite3"] = self.archive.db
        return dbs

    def _backup_files(self) -> dict[str, Path]:
        files = {}
        if self.cfg.source != "embedded default":
            files["config.toml"] = Path(self.cfg.source)
        if self.certificate is not None:
            files["tls/cert.pem"], files["tls/key.pem"] = self.certificate
        return files

    def _describe(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "domain": self.cfg.domain,
            "tls_self_signed": self.cfg.tls_cert is None,
        }

    def reactor_thread(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        from twisted.internet.threads import deferToThread

        return deferToThread(fn, *args)

    @defer.inlineCallbacks
    def _start_sip(self, router: Router, tls_options: Any):  # type: ignore[no-untyped-def]
        """SIP/SIMPLE: UDP and TCP on listen.sip, TLS on listen.sip_tls (RFC 3261 §18)."""
        cfg = self.cfg
        sip = self.sip = SipService(self.reactor, router, self.db, cfg.domain, cfg.sip_digest)
        sip.conferences = self.muc.conferences  # sip:room@conference.<domain> (DESIGN §5)
        restored = yield sip.start()
        if restored:
            log.info("sip: {n} registrations restored", n=restored)
        for addr in cfg.listen["sip"]:
            host = "" if addr.host == "*" else addr.host
            try:
                udp = self.reactor.listenUDP(addr.port, SipDatagram(sip), interface=host)
            except CannotListenError as e:
                raise StartupError(
                    f"listen.sip: cannot listen on {addr} (udp): {e.socketError}"
                ) from None
            udp.maxPacketSize = 65535  # Twisted reads 8 KiB by default: a bigger one is cut
            sip.transports.udp.append((udp.protocol, udp))
            self.ports.append(("sip", udp))
            self._listen("sip", addr, SipStreamFactory(sip.transports, "TCP"))
            sip.transports.stream_ports.setdefault("TCP", self.ports[-1][1])
        for addr in cfg.listen["sip_tls"]:
            self._listen("sip_tls", addr, SipStreamFactory(sip.transports, "TLS"), tls_options)
            sip.transports.stream_ports.setdefault("TLS", self.ports[-1][1])

    @defer.inlineCallbacks
    def _start_upload(self, iq: IqHandlers, policy: FederationPolicy, tls_options: Any):  # type: ignore[no-untyped-def]
        """XEP-0363 on upload.<domain>: HTTPS on listen.upload and edge.upload, TLS only, with
        the certificate object every listener shares (so reload() reaches it too)."""
        cfg = self.cfg
        upload = self.upload = UploadService(self.reactor, cfg, self.db)
        upload.policy = policy  # slots for edge sessions need outside access
        try:
            n = yield upload.start()
        except OSError as e:
            raise StartupError(f"data_dir: cannot use {upload.dir.root}: {e.strerror}") from None
        for addr in cfg.listen["upload"]:
            self._listen("upload", addr, upload.site(), tls_options)
        if cfg.edge["upload"]:
            site = upload.site(self.edge.guard if self.edge is not None else None)
            for addr in cfg.edge["upload"]:
                self._listen("edge.upload", addr, site, tls_options)
        for ctx in self.c2s_contexts:
            ctx.upload = upload
        iq.services.append({"jid": upload.domain, "name": "HTTP File Upload"})
        log.info("upload: {n} files kept; links at {url}", n=n, url=upload.urls["internal"])

    def _listen(self, name: str, addr: Address, factory: Any, tls_options: Any = None) -> None:
        factory.noisy = False
        host = "" if addr.host == "*" else addr.host
        try:
            if tls_options is None:
                port = self.reactor.listenTCP(addr.port, factory, interface=host, backlog=1024)
            else:
                port = self.reactor.listenSSL(
                    addr.port, factory, tls_options, interface=host, backlog=1024
                )
        except CannotListenError as e:
            raise StartupError(f"listen.{name}: cannot listen on {addr}: {e.socketError}") from None
        self.ports.append((name, port))

    def listeners(self) -> list[dict[str, Any]]:
        out = []
        for name, port in self.ports:
            h = port.getHost()
            transport = "udp" if getattr(h, "type", "TCP") == "UDP" else "tcp"
            out.append({"name": name, "address": f"{h.host}:{h.port}", "transport": transport})
        return out

    @defer.inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        """SIGTERM: tell every client, stop listening, flush the store."""
        for ctx in self.c2s_contexts:
            for stream in list(ctx.streams):
                stream.stream_error("system-shutdown", "the server is shutting down")
            for waiting in list(ctx.sm_sessions.values()):
                if waiting.detached:
                    waiting.give_up()  # its unacknowledged messages go to offline storage
        if self.sip is not None:
            self.sip.stop()
        if self.edge is not None:
            self.edge.stop()
        for _, port in self.ports:
            yield defer.maybeDeferred(port.stopListening)
        if self.control_port is not None:
            yield defer.maybeDeferred(self.control_port.stopListening)
        if self.upload is not None:
            self.upload.stop()
        if self.snapshots is not None:
            self.snapshots.stop()
        if self.counter_feed is not None:
            self.counter_feed.stop()
        # give the goodbyes a moment to reach the clients before the process exits
        yield _sleep(self.reactor, 0.2)
        if self.archive is not None:
            yield self.archive.close()
        if self.router is not None and self.router.history is not None:
            yield self.router.history.flush()
        if self.sip is not None:
            yield self.sip.registrar.flush()  # registrations survive the restart
        yield self.db.close()
        log.info("stopped")
        self.log_ring.publish = None
        globalLogPublisher.removeObserver(self.log_ring)

    @defer.inlineCallbacks
    def reload(self):  # type: ignore[no-untyped-def]
        """SIGHUP: read the certificate again, and tls.cert/tls.key from the config file.

        New connections get the new certificate, open ones keep theirs. No other setting
        changes at run time yet; changed ones are logged as waiting for a restart. A file that
        cannot be used is logged and the running configuration and certificate stay.
        """
        current = self.tls_options
        if current is None:
            log.warn("reload: the server has not started yet; nothing to reload")
            return
        cfg = self.cfg
        if cfg.source != "embedded default":
            try:
                new = yield self.reactor_thread(load, Path(cfg.source))
            except ConfigError as e:
                log.error("reload: {error}; nothing reloaded", error=e)
                return
            runtime = ("source", "tls_cert", "tls_key")
            waiting = [
                f.name
                for f in fields(cfg)
                if f.name not in runtime and getattr(new, f.name) != getattr(cfg, f.name)
            ]
            if waiting:
                log.warn(
                    "reload: changed in {source}, applied only at the next restart: {keys}",
                    keys=", ".join(waiting),
                    source=cfg.source,
                )
            cfg = replace(cfg, tls_cert=new.tls_cert, tls_key=new.tls_key)
        try:
            cert, key = yield self.reactor_thread(tls.ensure_certificate, cfg, log)
            changed = current.load(cert, key)
        except ConfigError as e:
            log.error("reload: {error}; keeping the certificate in use", error=e)
            return
        self.cfg = cfg
        self.certificate = (cert, key)
        s2s = self.edge.s2s if self.edge is not None else None
        if changed and s2s is not None:
            # federation too: inbound STARTTLS and our client certificate (SASL EXTERNAL)
            both = yield self.reactor_thread(
                lambda: (tls.server_tls_options(cert, key), tls.server_tls_options(cert, key))
            )
            s2s.set_certificate(*both)
        sip_federation = self.edge.sip if self.edge is not None else None
        if changed and sip_federation is not None:
            # the edge SIP listener (partners and remote users) and our client certificate
            both = yield self.reactor_thread(
                lambda: (tls.server_tls_options(cert, key), tls.server_tls_options(cert, key))
            )
            sip_federation.set_certificate(*both)
        try:
            end_point: bytes | None = tls.server_end_point_hash(current.der)
        except ValueError:
            end_point = None  # RFC 5929 §4.1: undefined for e.g. Ed25519 certificates
        for ctx in self.c2s_contexts:
            ctx.server_end_point = end_point
        if changed:
            log.info(
                "reload: certificate {path} (SHA-256 {fingerprint}) serves new connections; "
                "open ones keep the previous one",
                path=cert,
                fingerprint=current.fingerprint,
            )
        else:
            log.info("reload: certificate {path} unchanged", path=cert)
        log.info("reload: done; the certificate is the only setting that changes at run time")


def _sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def _decoy_secret(db: sqlite_utils.Database) -> bytes:
    """A per-installation secret for decoy credentials of unknown users, made once."""
    row = db.execute("SELECT value FROM settings WHERE key = 'decoy_secret'").fetchone()
    if row:
        return bytes.fromhex(row[0])
    value = secrets.token_bytes(32)
    db["settings"].insert({"key": "decoy_secret", "value": value.hex()})
    return value


@implementer(IOpenSSLServerConnectionCreator)
class CurrentTLSOptions:
    """The certificate in force, for every TLS listener and STARTTLS alike.

    Twisted asks it for each new TLS connection, so load() changes the certificate of new
    connections without listening again; connections already open keep theirs.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.load(cert, key)

    def load(self, cert: Path, key: Path) -> bool:
        """Serve this pair from now on; True if the certificate differs from the one before."""
        options = tls.server_tls_options(cert, key)
        options.getContext()  # a pair OpenSSL refuses fails here, not at the next handshake
        der = tls.certificate_der(cert)
        changed = der != getattr(self, "der", None)
        self.options, self.der = options, der
        return changed

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        options = self.options
        if IOpenSSLServerConnectionCreator.providedBy(options):
            return options.serverConnectionForTLS(protocol)  # type: ignore[no-any-return]
        return SSL.Connection(options.getContext(), None)  # Twisted before 25: no such method

    def getContext(self) -> SSL.Context:
        return self.options.getContext()
