"""How se-ctl prints a result for people: nested sections indent, settings show their source."""

from __future__ import annotations

from appliance.ctl import key_values


def test_sections_indent_and_settings_show_where_they_come_from() -> None:
    status = {
        "domain": "example.test",
        "settings": {
            "im.offline": {"value": True, "source": "se-ctl"},
            "federation.allow": {"value": [], "source": "config"},
        },
        "edge": {"limits": {"locked": 0, "limits": {"stanzas_per_second": 50}}, "sip": None},
        "pep": {"nodes": 2, "published": 7},
    }
    assert key_values(status).splitlines() == [
        "domain:   example.test",
        "settings:",
        "  im.offline:       yes (se-ctl)",
        "  federation.allow: none (config)",
        "edge:",
        "  limits:",
        "    locked: 0",
        "    limits: stanzas_per_second 50",
        "  sip:    -",
        "pep:      nodes 2, published 7",
    ]
