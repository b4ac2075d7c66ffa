"""The packaging files agree with the code: fast checks that run with the normal suite."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from standard_edition import __version__, config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "packaging" / "config.toml"
DEBIAN = ROOT / "packaging" / "debian"
UNIT = DEBIAN / "se-appliance.service"


def unit_values(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), re.MULTILINE)


def test_sample_config_sets_every_key_the_server_knows() -> None:
    # DESIGN §8: every key is documented in the sample config that ships in the package
    sample = tomllib.loads(SAMPLE.read_text())
    missing = []
    for key, rule in config.SCHEMA.items():
        subkeys = [f"{key}.{sub}" for sub in rule] if isinstance(rule, dict) else [key]
        for dotted in subkeys:
            table: object = sample
            for part in dotted.split("."):
                table = table.get(part) if isinstance(table, dict) else None
            if table is None:
                missing.append(dotted)
    assert not missing, f"add these keys, documented, to packaging/config.toml: {missing}"


def test_sample_config_is_valid_for_a_lan_server(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(SAMPLE.read_text().replace('"example.test"', '"im.example.org"', 1))
    cfg = config.load(path)
    assert cfg.domain == "im.example.org"  # the line postinst rewrites is the first one quoted
    assert cfg.data_dir == Path("/var/lib/se-appliance")
    assert cfg.control_socket.parent == Path("/var/lib/se-appliance")
    for name in ("c2s", "c2s_tls"):
        assert [a.host for a in cfg.listen[name]] == ["*"], f"listen.{name}: all interfaces"
        assert all(a.port > 1024 for a in cfg.listen[name])  # CapabilityBoundingSet= is empty


def test_unit_runs_the_system_config_and_may_write_only_the_data_dir() -> None:
    sample = tomllib.loads(SAMPLE.read_text())
    (exec_start,) = unit_values("ExecStart")
    assert exec_start.split()[0] == "/usr/sbin/se-appliance"
    assert f"--config {config.SYSTEM_CONFIG}" in exec_start
    assert unit_values("ReadWritePaths") == [sample["data_dir"]]
    assert unit_values("WorkingDirectory") == [sample["data_dir"]]
    assert unit_values("ProtectSystem") == ["strict"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_unit_exposure_is_at_most_2() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out[-2000:]
    assert float(m.group(1)) <= 2.0, out


def test_changelog_is_at_the_code_version() -> None:
    top = (DEBIAN / "changelog").read_text().splitlines()[0]
    version = re.match(r"se-appliance \(([^)]+)\)", top)
    assert version, top
    assert re.fullmatch(rf"{re.escape(__version__)}(\+.*)?", version.group(1)), (
        f"packaging/debian/changelog is at {version.group(1)}, standard_edition at "
        f"{__version__}: add a changelog entry"
    )


def test_readme_tells_how_to_build_and_test_the_package() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "packaging/build-deb" in readme and "packaging/test-deb" in readme


def test_every_module_is_in_a_package_the_wheel_includes() -> None:
    # setup.cfg's `packages = find:` takes only directories with an __init__.py; a module
    # elsewhere works in the editable checkout but is missing from the .deb
    from setuptools import find_packages

    packaged = set(find_packages(str(ROOT), include=["standard_edition*", "appliance*"]))
    for top in ("standard_edition", "appliance"):
        for d in sorted({p.parent for p in (ROOT / top).rglob("*.py")}):
            if "__pycache__" in d.parts:
                continue
            name = ".".join(d.relative_to(ROOT).parts)
            assert name in packaged, f"{d.relative_to(ROOT)}/ has no __init__.py"
