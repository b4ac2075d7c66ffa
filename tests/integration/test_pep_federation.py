"""PEP across federation: the server asks a partner's client for its XEP-0115 caps over s2s,
and that client's `+notify` then brings it the owner's PEP notifications."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from .server import Server
from .test_federation import pair, status, subscribe_both_ways
from .test_pep import DEVICES, EVENT, META, event_of, pep_login
from .xmppclient import Sessions, next_matching

INFO = f"{{{META}}}info"


def info_id(m: Any) -> str | None:
    info = m.xml.find(f"{EVENT}/*/*/{{{META}}}metadata/{INFO}")
    return None if info is None else info.get("id")


def test_remote_contact_with_notify_gets_pep_events_after_a_caps_query_over_s2s(
    make_server: Callable[..., Server], run: Callable[..., Any]
) -> None:
    a, b = pair(make_server)
    (alice,) = a.new_users("alice")
    (erin,) = b.new_users("erin")
    ja, je = f"{alice}@a.test", f"{erin}@b.test"
    first, second = b"first picture", b"second picture"

    async def publish(c: Any, image: bytes) -> str:
        sha = hashlib.sha1(image).hexdigest()
        await c.plugin["xep_0084"].publish_avatar(image)
        await c.plugin["xep_0084"].publish_avatar_metadata(
            [{"id": sha, "type": "image/png", "bytes": len(image)}]
        )
        return sha

    async def scenario() -> None:
        async with Sessions(a) as sa, Sessions(b) as sb:
            # different interests, different caps: a.test cannot know erin's from alice's
            ca = await pep_login(sa, alice, (DEVICES,))
            ce = await pep_login(sb, erin, (META,))
            sha1 = await publish(ca, first)
            asked = status(a)["pep"]["caps_queries"]
            await subscribe_both_ways(ca, ce, ja, je)
            # a.test asks erin's client what it wants, then sends the last item it missed
            got = await next_matching(
                ce.inbox, lambda m: event_of(META, ja)(m) and info_id(m) == sha1, 30
            )
            assert got["from"].bare == ja
            assert status(a)["pep"]["caps_queries"] > asked
            # and every later publish reaches it as it happens
            sha2 = await publish(ca, second)
            await next_matching(
                ce.inbox, lambda m: event_of(META, ja)(m) and info_id(m) == sha2, 20
            )
            data = await ce.plugin["xep_0084"].retrieve_avatar(ja, sha2, timeout=20)
            assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == second

    run(scenario(), 120)
    pep = status(a)["pep"]
    assert pep["published"] >= 4 and pep["notifications"] >= 2
