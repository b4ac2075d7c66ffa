"""The config file: lookup order, validation that names the key, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from standard_edition import config
from standard_edition.config import Address, ConfigError


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_embedded_default_is_the_demo_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None)
    assert cfg.domain == "example.test"
    assert cfg.source == "embedded default"
    assert cfg.data_dir == tmp_path / "var"
    assert cfg.control_socket == tmp_path / "var" / "control.sock"
    assert cfg.tls_cert is None and cfg.tls_key is None
    assert cfg.listen["c2s"] == (Address("127.0.0.1", 5222),)
    assert cfg.listen["c2s_tls"] == (Address("127.0.0.1", 5223),)
    assert all(not addrs for addrs in cfg.edge.values())


def test_a_minimal_file_needs_only_the_domain(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, 'domain = "Chat.Example.ORG."\n'))
    assert cfg.domain == "chat.example.org"
    assert cfg.data_dir == tmp_path / "var"
    assert cfg.listen["c2s"] == ()  # nothing listens unless the file says so


def test_relative_paths_resolve_against_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    f = write(
        etc,
        'domain = "example.test"\ndata_dir = "state"\n[tls]\ncert = "c.pem"\nkey = "/k/key.pem"\n',
    )
    monkeypatch.chdir(tmp_path)
    cfg = config.load(Path("etc/config.toml"))
    assert cfg.data_dir == etc / "state"
    assert cfg.tls_cert == etc / "c.pem"
    assert cfg.tls_key == Path("/k/key.pem")
    assert cfg.source == "etc/config.toml"
    assert f.exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('domain = "example.test"\ncolour = "red"\n', "colour: unknown key"),
        ('domain = "example.test"\n[listen]\nxmpp = []\n', "listen.xmpp: unknown key"),
        (
            'domain = "example.test"\n[im]\noffline = true\nofline = false\n',
            "im.ofline: unknown key",
        ),
        (
            'domain = "example.test"\n[federation.hosts]\n"a.example" = { ftp = "1.2.3.4:21" }\n',
            "federation.hosts.a.example.ftp: unknown key",
        ),
    ],
)
def test_an_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    assert error_of(tmp_path, text) == key


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("", "domain: missing"),
        ('domain = "bad domain"\n', "domain:"),
        ("domain = 7\n", "domain:"),
        ('domain = "example.test"\n[listen]\nc2s = "127.0.0.1:5222"\n', "listen.c2s:"),
        ('domain = "example.test"\n[listen]\nc2s = ["127.0.0.1"]\n', "listen.c2s:"),
        ('domain = "example.test"\n[listen]\nc2s = ["127.0.0.1:70000"]\n', "listen.c2s:"),
        ('domain = "example.test"\n[listen]\nc2s = ["chat.local:5222"]\n', "listen.c2s:"),
        ('domain = "example.test"\n[federation]\nmode = "closed"\n', "federation.mode:"),
        ('domain = "example.test"\n[federation]\nallow = ["not a domain"]\n', "federation.allow:"),
        ('domain = "example.test"\n[sip]\ndigest = ["SHA-256"]\n', "sip.digest:"),
        ('domain = "example.test"\n[im]\noffline = "yes"\n', "im.offline:"),
        ('domain = "example.test"\n[archive]\nmode = "some"\n', "archive.mode:"),
        ('domain = "example.test"\n[xmpp]\nmax_stanza_size = 10\n', "xmpp.max_stanza_size:"),
        ('domain = "example.test"\nim = 1\n', "[im]:"),
        ('domain = "example.test"\n[tls]\ncert = "c.pem"\n', "tls.cert, tls.key:"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path, text: str, starts: str) -> None:
    assert error_of(tmp_path, text).startswith(starts)


def test_addresses_accept_ipv6_and_wildcard(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, 'domain = "example.test"\n[listen]\nc2s = ["[::1]:5222", "*:5223"]\n')
    )
    assert cfg.listen["c2s"] == (Address("::1", 5222), Address("*", 5223))
    assert str(cfg.listen["c2s"][0]) == "[::1]:5222"


def test_sha256_digest_is_offered_after_md5(tmp_path: Path) -> None:
    cfg = config.load(
        write(tmp_path, 'domain = "example.test"\n[sip]\ndigest = ["MD5", "SHA-256", "MD5"]\n')
    )
    assert cfg.sip_digest == ("MD5", "SHA-256")


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error_of(tmp_path, "domain = \n")
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "missing.toml")


def test_every_key_of_the_shipped_default_is_known() -> None:
    # the shipped sample is the documentation of the keys; it must load as it is
    assert config.load(None).sip_digest == ("MD5",)


# -- where the file is found -------------------------------------------------------------------


@pytest.fixture
def system_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    f = tmp_path / "system.toml"
    monkeypatch.setattr(config, "SYSTEM_CONFIG", f)
    monkeypatch.delenv("SE_CONFIG", raising=False)
    return f


def test_locate_prefers_the_command_line(
    system_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_file.write_text("")
    monkeypatch.setenv("SE_CONFIG", "/from/env.toml")
    assert config.locate("/from/cli.toml") == Path("/from/cli.toml")


def test_locate_then_the_environment(system_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system_file.write_text("")
    monkeypatch.setenv("SE_CONFIG", "/from/env.toml")
    assert config.locate(None) == Path("/from/env.toml")


def test_locate_then_the_system_file(system_file: Path) -> None:
    system_file.write_text("")
    assert config.locate(None) == system_file


def test_locate_else_the_embedded_default(system_file: Path) -> None:
    assert config.locate(None) is None


def test_an_empty_environment_variable_is_ignored(
    system_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SE_CONFIG", "")
    assert config.locate(None) is None
