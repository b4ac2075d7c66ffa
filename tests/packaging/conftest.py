"""The packaging tests: fast checks of the packaging files always; the .deb itself only when
SE_PACKAGE_TESTS=1 (minutes; run them with packaging/test-deb)."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "package: builds and installs the .deb (slow; needs SE_PACKAGE_TESTS=1, root)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SE_PACKAGE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="builds and installs the .deb: run packaging/test-deb")
    for item in items:
        if "package" in item.keywords:
            item.add_marker(skip)
