"""`se-ctl backup FILE` and `se-ctl restore FILE`.

backup: the running server snapshots every database (SQLite backup API on each writer thread),
its config file and certificate, and the uploaded files unless --no-uploads (store/backup.py);
se-ctl reads the snapshot in chunks over the control socket and writes FILE itself: a gzip'd
tar whose first member, manifest.json, names the release, the schema version of each database
and the SHA-256 of every member.

restore: runs without a server (refused while one answers on the control socket), checks every
member against the manifest, refuses a schema newer than this release knows, and writes into
the data_dir of the config given, giving every file the data_dir owner's uid and gid. Then
the restored store keeps only the upload rows whose files are in data_dir/uploads (from the
backup, or already there), so a link answers 404 exactly when the file is not kept, and each
user's upload quota counts only what is kept.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import socket
import sqlite3
import sys
import tarfile
import time
from pathlib import Path
from typing import IO, Any

from appliance.control_client import ControlClient, ControlClientError
from appliance.progress import Progress
from standard_edition import __version__
from standard_edition.archive.store import MIGRATIONS as ARCHIVE_MIGRATIONS
from standard_edition.config import Config
from standard_edition.store.backup import FORMAT, UPLOAD_TOKEN, UPLOADS
from standard_edition.store.migrations import MIGRATIONS
from standard_edition.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY

MANIFEST = "manifest.json"
# the schema each database file of this release knows; a newer one cannot be restored here
KNOWN_SCHEMAS = {
    "se.sqlite3": max(n for n, _ in MIGRATIONS),
    "archive.sqlite3": max(n for n, _ in ARCHIVE_MIGRATIONS),
}
EXAMPLES = {
    "backup": "se-ctl backup /srv/backup/se-$(date +%F).tar.gz\n"
    "  se-ctl backup nightly.tar.gz --progress --json 2>progress.log\n"
    "  se-ctl backup small.tar.gz --no-uploads",
    "restore": "systemctl stop se-appliance && se-ctl restore se-2025-01-31.tar.gz --force",
}


class BackupError(Exception):
    """str() is the one line se-ctl prints."""


def add_parsers(commands: Any, leaf: Any) -> None:
    b = leaf(commands, "backup", "backup", "write an online snapshot of the server to FILE")
    b.add_argument("file", metavar="FILE", help="the backup file to write (a .tar.gz)")
    b.add_argument(
        "--progress",
        action="store_true",
        help="report bytes copied on stderr even when it is not a terminal",
    )
    b.add_argument(
        "--no-uploads",
        action="store_true",
        help="leave the uploaded files (HTTP upload) out; a restore then drops their links",
    )
    r = leaf(
        commands,
        "restore",
        "restore",
        "restore a backup into the config's data_dir (the server must be stopped)",
    )
    r.add_argument("file", metavar="FILE", help="a file written by se-ctl backup")
    r.add_argument(
        "--force",
        action="store_true",
        help="replace a store already in data_dir (its files are kept as *.before-restore)",
    )


# -- backup ------------------------------------------------------------------------------------


class _RemoteMember(io.RawIOBase):
    """One member of the server's snapshot, read in chunks over the control socket."""

    def __init__(
        self,
        client: ControlClient,
        sid: str,
        name: str,
        size: int,
        progress: Progress | None = None,
        before: int = 0,
    ) -> None:
        self._client, self._sid, self._name, self._size = client, sid, name, size
        self._progress, self._before = progress, before
        self._offset = 0
        self._buffer = b""
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        want = self._size - self._offset + len(self._buffer) if n is None or n < 0 else n
        while len(self._buffer) < want and self._offset < self._size:
            r = self._client.call("backup.read", id=self._sid, name=self._name, offset=self._offset)
            data = base64.b64decode(r["data"])
            if not data:
                raise BackupError(f"backup: {self._name} ended early at byte {self._offset}")
            self._offset += len(data)
            self.sha256.update(data)
            if self._progress is not None:
                self._progress.update(self._before + self._offset)
            self._buffer += data
        out, self._buffer = self._buffer[:want], self._buffer[want:]
        return out


def backup(args: argparse.Namespace, cfg: Config) -> int:
    target = Path(args.file)
    tmp = target.with_name(f".{target.name}.partial")
    started = time.monotonic()
    progress = Progress("backup", None, asked=args.progress)
    with ControlClient(cfg.control_socket, timeout=600) as client:
        what = "databases" if args.no_uploads else "databases and uploaded files"
        progress.say(f"the server is taking a snapshot of its {what}")
        snap = client.call("backup.start", uploads=not args.no_uploads)
        sid, manifest = snap["id"], snap["manifest"]
        progress.total = sum(int(m["size"]) for m in manifest["members"])
        done = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as e:
            client.call("backup.finish", id=sid)
            raise BackupError(f"cannot write {tmp}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
                for m in manifest["members"]:
                    member = _RemoteMember(client, sid, m["name"], m["size"], progress, done)
                    info = tarfile.TarInfo(m["name"])
                    info.size, info.mtime, info.mode = m["size"], int(time.time()), 0o600
                    tar.addfile(info, member)
                    if member.sha256.hexdigest() != m["sha256"]:
                        raise BackupError(f"backup: {m['name']} changed while being read")
                    done += int(m["size"])
            progress.finish(done)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            with contextlib.suppress(ControlClientError):
                client.call("backup.finish", id=sid)
    size = target.stat().st_size
    schemas = ", ".join(f"{k} schema {v}" for k, v in manifest["schemas"].items())
    uploads = [m for m in manifest["members"] if m["name"].startswith(UPLOADS)]
    result = {
        "file": str(target),
        "bytes": size,
        "members": [m["name"] for m in manifest["members"] if not m["name"].startswith(UPLOADS)],
        "schemas": manifest["schemas"],
        "uploads": {
            "included": not args.no_uploads,
            "files": len(uploads),
            "bytes": sum(int(m["size"]) for m in uploads),
        },
        "seconds": round(time.monotonic() - started, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        kept = (
            "uploaded files left out"
            if args.no_uploads
            else f"{len(uploads)} uploaded files, {result['uploads']['bytes']} bytes"
        )
        print(
            f"backup {target}: {len(manifest['members'])} files, {size} bytes ({schemas}; "
            f"{kept}) in {result['seconds']} s"
        )
    return 0


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


# -- restore -----------------------------------------------------------------------------------


def server_running(cfg: Config) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(str(cfg.control_socket))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def read_manifest(tar: tarfile.TarFile, name: str) -> dict[str, Any]:
    try:
        f = tar.extractfile(MANIFEST)
        manifest = json.loads(f.read()) if f is not None else None
    except (KeyError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("members"), list):
        raise BackupError(f"{name}: not an se-ctl backup (no valid {MANIFEST})")
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{name}: backup format {manifest.get('format')!r}; this se-ctl "
            f"({__version__}) reads format {FORMAT}"
        )
    return manifest


def check_schemas(manifest: dict[str, Any], name: str) -> None:
    for db, version in (manifest.get("schemas") or {}).items():
        known = KNOWN_SCHEMAS.get(db)
        if known is None:
            raise BackupError(f"{name}: holds {db}, which this release does not know")
        if not isinstance(version, int) or version > known:
            raise BackupError(
                f"{name}: {db} has schema version {version}, newer than this release "
                f"({__version__}) knows ({known}); restore it with the se-appliance release "
                f"that wrote it ({manifest.get('version', 'unknown')}) or a later one"
            )


def restore(args: argparse.Namespace, cfg: Config) -> int:
    name = args.file
    if server_running(cfg):
        raise BackupError(
            f"se-appliance is running (it answers on {cfg.control_socket}); stop it first "
            "(systemctl stop se-appliance)"
        )
    try:
        tar = tarfile.open(name, "r:*")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    with tar:
        manifest = read_manifest(tar, name)
        check_schemas(manifest, name)
        if manifest.get("domain") != cfg.domain:
            raise BackupError(
                f"{name}: backup of {manifest.get('domain')!r}, but {cfg.source} serves "
                f"{cfg.domain!r}; accounts are tied to their domain (set domain first)"
            )
        data_dir = cfg.data_dir
        if (data_dir / "se.sqlite3").exists() and not args.force:
            raise BackupError(
                f"{data_dir} already holds a store; add --force to replace it (the files now "
                "there are kept as *.before-restore)"
            )
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        st = data_dir.stat()
        owner = (st.st_uid, st.st_gid)
        staging = data_dir / f".restore-{os.getpid()}"
        staging.mkdir(mode=0o700)
        try:
            placed, uploads = _restore_members(tar, manifest, name, staging, cfg, owner)
            dropped = _drop_missing_uploads(cfg)
        finally:
            for p in staging.rglob("*"):
                with contextlib.suppress(OSError):
                    p.unlink()
            with contextlib.suppress(OSError):
                staging.rmdir()
    result = {
        "file": name,
        "data_dir": str(data_dir),
        "written": placed,
        **manifest["schemas"],
        "uploads": {"files": uploads, "links_dropped": dropped},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        missing = f"; {dropped} uploads not in the backup dropped" if dropped else ""
        print(
            f"restored {name} into {data_dir}: {', '.join(placed)}, {uploads} uploaded files"
            f"{missing} (backup of {manifest.get('domain')} made {manifest.get('created', '?')})"
        )
    return 0


def _drop_missing_uploads(cfg: Config) -> int:
    """The restored store forgets the uploads whose files data_dir/uploads does not hold (a
    backup made with --no-uploads, or a file that expired while the backup was made): their
    links answer 404 and they no longer count towards anyone's quota. Returns how many."""
    folder = cfg.data_dir / "uploads"
    if not cfg.database.is_file():
        return 0
    try:
        conn = sqlite3.connect(str(cfg.database), timeout=30)
    except sqlite3.Error as e:
        raise BackupError(f"{cfg.database}: cannot open the restored store: {e}") from None
    try:
        try:
            tokens = [t for (t,) in conn.execute("SELECT token FROM uploads")]
        except sqlite3.OperationalError:
            return 0  # a store from before uploads existed
        gone = [t for t in tokens if not (folder / str(t)).is_file()]
        with conn:
            conn.executemany("DELETE FROM uploads WHERE token = ?", [(t,) for t in gone])
    except sqlite3.Error as e:
        raise BackupError(f"{cfg.database}: cannot update the restored store: {e}") from None
    finally:
        conn.close()
    return len(gone)


def _restore_members(
    tar: tarfile.TarFile,
    manifest: dict[str, Any],
    name: str,
    staging: Path,
    cfg: Config,
    owner: tuple[int, int],
) -> tuple[list[str], int]:
    """Every member in place; returns the files written (but uploads) and the uploads count."""
    # first every member into staging, checked; only then anything in data_dir changes
    staged: dict[str, Path] = {}
    for m in manifest["members"]:
        member = str(m.get("name", ""))
        if _destination(member, cfg) is None:
            raise BackupError(f"{name}: unexpected member {member!r}")
        try:
            f = tar.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise BackupError(f"{name}: member {member} is missing")
        path = staging / member.replace("/", "_")
        size, digest = _copy_checked(f, path, owner)
        if size != m.get("size") or digest != m.get("sha256"):
            raise BackupError(f"{name}: {member} does not match its checksum; the file is damaged")
        if member.endswith(".sqlite3"):
            _check_database(path, member, name)
        staged[member] = path
    placed = []
    uploads = 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for member, path in staged.items():
        target = _destination(member, cfg)
        if target is None:
            continue
        if member.startswith(UPLOADS):
            if not target.parent.exists():
                target.parent.mkdir(mode=0o750)
                _give(target.parent, owner)  # the server writes new uploads there
            # a token names one file for good: one already there is the same file
            os.replace(path, target)
            uploads += 1
            continue
        if member.startswith("tls/") and cfg.tls_cert is not None and target.exists():
            print(f"se-ctl: kept {target} (tls.cert/tls.key in the config)", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.endswith(".sqlite3"):
            for suffix in ("-wal", "-shm"):
                side = Path(f"{target}{suffix}")
                if side.exists():
                    side.rename(f"{side}.before-restore-{stamp}")
        if target.exists():
            target.rename(f"{target}.before-restore-{stamp}")
        os.replace(path, target)
        placed.append(
            str(target.relative_to(cfg.data_dir))
            if target.is_relative_to(cfg.data_dir)
            else str(target)
        )
    return placed, uploads


_DESTINATIONS: dict[str, Any] = {
    "se.sqlite3": lambda cfg: cfg.database,
    "archive.sqlite3": lambda cfg: cfg.archive_database,
    "config.toml": lambda cfg: cfg.data_dir / "config.toml.from-backup",
    "tls/cert.pem": lambda cfg: cfg.tls_cert or cfg.data_dir / SELF_SIGNED_CERT,
    "tls/key.pem": lambda cfg: cfg.tls_key or cfg.data_dir / SELF_SIGNED_KEY,
}


def _destination(member: str, cfg: Config) -> Path | None:
    """Where a member of a backup goes; None for a name no backup has."""
    if member.startswith(UPLOADS):
        token = member.removeprefix(UPLOADS)
        return cfg.data_dir / "uploads" / token if UPLOAD_TOKEN.fullmatch(token) else None
    where = _DESTINATIONS.get(member)
    return where(cfg) if where is not None else None


def _copy_checked(src: IO[bytes], path: Path, owner: tuple[int, int]) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := src.read(1 << 20):
            h.update(block)
            size += len(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    _give(path, owner)
    return size, h.hexdigest()


def _give(path: Path, owner: tuple[int, int]) -> None:
    """The data_dir owner's uid and gid, when se-ctl runs as someone else (root)."""
    if (os.geteuid(), os.getegid()) != owner:
        try:
            os.chown(path, *owner)
        except OSError as e:
            raise BackupError(f"cannot give {path} to uid {owner[0]}: {e.strerror}") from None


def _check_database(path: Path, member: str, name: str) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{name}: {member} is not a usable database: {e}") from None
    if ok != "ok":
        raise BackupError(f"{name}: {member} fails SQLite's check: {ok}")
    if version > KNOWN_SCHEMAS[member]:
        raise BackupError(
            f"{name}: {member} has schema version {version}, newer than this release "
            f"({__version__}) knows ({KNOWN_SCHEMAS[member]})"
        )
