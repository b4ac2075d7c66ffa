"""Uploaded files in backups: linked into the snapshot, placed by restore, rows without files
dropped (store/backup.py, appliance/backup_cli.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.backup_cli import _destination, _drop_missing_uploads
from standard_edition import config
from standard_edition.store.backup import _link_uploads

KEPT = "k" * 32
EXPIRED = "e" * 32


def store_with_uploads(path: Path, tokens: list[str]) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE uploads (token TEXT PRIMARY KEY, owner TEXT, size INTEGER)")
        conn.executemany("INSERT INTO uploads VALUES (?, 'alice', 1)", [(t,) for t in tokens])
    conn.close()


def tokens_in(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {t for (t,) in conn.execute("SELECT token FROM uploads")}
    finally:
        conn.close()


def test_snapshot_links_the_files_the_store_copy_knows(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / KEPT).write_bytes(b"picture")
    (folder / "unknown-file-with-no-row-at-all").write_bytes(b"x")
    store = tmp_path / "copy.sqlite3"
    # EXPIRED: its file went while the snapshot was made; the third is no token of ours
    store_with_uploads(store, [KEPT, EXPIRED, "../../../../etc/passwd"])
    target = tmp_path / "snapshot" / "uploads"
    target.parent.mkdir()
    _link_uploads(store, folder, target)
    assert [p.name for p in target.iterdir()] == [KEPT]
    # linked, not copied: no extra disk, and the file outlives its removal from uploads/
    assert (target / KEPT).stat().st_ino == (folder / KEPT).stat().st_ino
    (folder / KEPT).unlink()
    assert (target / KEPT).read_bytes() == b"picture"


def test_a_store_without_the_uploads_table_links_nothing(tmp_path: Path) -> None:
    store = tmp_path / "old.sqlite3"
    sqlite3.connect(store).close()
    _link_uploads(store, tmp_path / "uploads", tmp_path / "target")
    assert list((tmp_path / "target").iterdir()) == []


def test_restore_places_uploads_only_under_uploads_and_drops_rows_without_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.toml").write_text('domain = "example.test"\ndata_dir = "data"\n')
    cfg = config.load(tmp_path / "config.toml")
    assert _destination(f"uploads/{KEPT}", cfg) == cfg.data_dir / "uploads" / KEPT
    for bad in ("uploads/../se.sqlite3", "uploads/", "uploads/a/b", "../se.sqlite3", "x"):
        assert _destination(bad, cfg) is None, bad
    (cfg.data_dir / "uploads").mkdir(parents=True)
    (cfg.data_dir / "uploads" / KEPT).write_bytes(b"picture")
    assert _drop_missing_uploads(cfg) == 0  # no store: nothing to do, nothing created
    assert not cfg.database.exists()
    store_with_uploads(cfg.database, [KEPT, EXPIRED])
    assert _drop_missing_uploads(cfg) == 1
    assert tokens_in(cfg.database) == {KEPT}
