"""Uploaded files on disk and their rows in the store.

The rows (table `uploads`, migration 8) run on the store's thread through Database.run; the
file work runs on the upload service's own threads. Nothing here runs on the reactor.

data_dir/uploads/<token>          a kept file, named by the secret of its URL
data_dir/uploads/incoming/<token> a body being received; moved into place when complete
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import sqlite_utils

from standard_edition.upload.ledger import StoredFile

# -- rows (store thread) -----------------------------------------------------------------------


def load_files(db: sqlite_utils.Database) -> list[StoredFile]:
    rows = db.execute(
        "SELECT token, owner, filename, content_type, size, created, expires FROM uploads"
    ).fetchall()
    return [StoredFile(*row) for row in rows]


def insert_file(db: sqlite_utils.Database, f: StoredFile) -> None:
    db.execute(
        "INSERT INTO uploads (token, owner, filename, content_type, size, created, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (f.token, f.owner, f.filename, f.content_type, f.size, f.created, f.expires),
    )


def delete_files(db: sqlite_utils.Database, tokens: list[str]) -> None:
    db.conn.executemany("DELETE FROM uploads WHERE token = ?", [(t,) for t in tokens])


# -- files (upload threads) --------------------------------------------------------------------


class UploadDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"

    def path(self, token: str) -> Path:
        return self.root / token

    def part(self, token: str) -> Path:
        return self.incoming / token

    def prepare(self, known: set[str]) -> tuple[int, int]:
        """Make the folders; drop bodies a stop cut short and files no row knows (a stop
        between the move and the commit). Returns (partial bodies, orphans) removed."""
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
        partial = orphans = 0
        for entry in os.scandir(self.incoming):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                partial += 1
        for entry in os.scandir(self.root):
            if entry.is_file(follow_symlinks=False) and entry.name not in known:
                os.unlink(entry.path)
                orphans += 1
        return partial, orphans

    def remove(self, tokens: Iterable[str]) -> int:
        """Delete these kept files; returns how many were there."""
        n = 0
        for t in tokens:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(t))
                n += 1
        return n


def open_part(path: Path) -> IO[bytes]:
    # O_EXCL: a token names one body only; 0640: the files are the users', not the world's
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    return os.fdopen(fd, "wb")


def finish_part(f: IO[bytes], part: Path, final: Path) -> int:
    """Flush the body to disk and move it into place; returns its length."""
    f.flush()
    os.fsync(f.fileno())
    size = f.tell()
    f.close()
    os.replace(part, final)
    return size


def discard_part(f: IO[bytes] | None, part: Path) -> None:
    if f is not None:
        f.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
