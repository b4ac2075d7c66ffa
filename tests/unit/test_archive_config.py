"""The [archive] keys of config.toml: defaults, values, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from standard_edition import config
from standard_edition.archive.policy import from_config
from standard_edition.config import ConfigError


def load(tmp_path: Path, archive: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(f'domain = "example.test"\n[archive]\n{archive}\n')
    return config.load(path)


def test_defaults_archive_nothing_and_keep_everything(tmp_path: Path) -> None:
    p = from_config(load(tmp_path, ""))
    assert (p.mode, p.users, p.internal, p.external, p.critical, p.keep_days) == (
        "off",
        frozenset(),
        True,
        True,
        False,
        0,
    )


def test_the_embedded_default_documents_every_archive_key() -> None:
    cfg = config.load(None)
    assert from_config(cfg).mode == "off"
    text = (Path(config.__file__).parent / "default.toml").read_text()
    for key in ("mode", "users", "internal", "external", "critical", "keep_days"):
        assert f"\n{key} = " in text.split("[archive]")[1].split("\n[")[0]


def test_values_are_read(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        'mode = "users"\nusers = ["Alice@Example.test"]\ninternal = false\n'
        "critical = true\nkeep_days = 14",
    )
    p = from_config(cfg)
    assert p.mode == "users" and p.users == frozenset({"alice@example.test"})
    assert not p.internal and p.external and p.critical and p.keep_days == 14
    assert cfg.archive_database == cfg.data_dir / "archive.sqlite3"


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ('mode = "some"', "archive.mode:"),
        ('users = "alice@example.test"', "archive.users:"),
        ('users = ["alice"]', "archive.users:"),
        ("internal = 1", "archive.internal:"),
        ('external = "no"', "archive.external:"),
        ("critical = 0", "archive.critical:"),
        ("keep_days = -1", "archive.keep_days:"),
        ("keep_days = true", "archive.keep_days:"),
        ("retention = 3", "archive.retention: unknown key"),
    ],
)
def test_a_bad_archive_value_is_one_line_naming_the_key(
    tmp_path: Path, text: str, starts: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    assert str(e.value).startswith(starts) and "\n" not in str(e.value)
