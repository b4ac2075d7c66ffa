"""XEP-0280 message carbons: a user's other clients see both sides of a chat."""

from __future__ import annotations

from .server import Server
from .xmppclient import Sessions, next_matching, nothing_matching

CARBONS = "{urn:xmpp:carbons:2}"
FWD = "{urn:xmpp:forward:0}forwarded/{jabber:client}message"


def test_sent_and_received_copies_reach_the_other_client_only_when_enabled(server: Server, run):
    alice, bob = server.new_users("alice", "bob")
    aj, bj = f"{alice}@{server.domain}", f"{bob}@{server.domain}"

    async def scenario() -> None:
        async with Sessions(server) as ss:
            laptop = await ss.login(alice, resource="laptop")
            phone = await ss.login(alice, resource="phone")
            b = await ss.login(bob)
            phone.register_plugin("xep_0280")
            await phone.plugin["xep_0280"].enable()
            laptop.send_message(mto=bj, mbody="sent from the laptop", mtype="chat")
            await next_matching(b.inbox, lambda m: m["body"] == "sent from the laptop")
            copy = await next_matching(
                phone.inbox, lambda m: m.xml.find(CARBONS + "sent") is not None
            )
            inner = copy.xml.find(f"{CARBONS}sent/{FWD}")
            assert inner.findtext("{jabber:client}body") == "sent from the laptop"
            assert str(copy["from"]) == aj
            # bob answers the laptop's full address: the phone gets a received copy
            b.send_message(mto=f"{aj}/laptop", mbody="answer", mtype="chat")
            await next_matching(laptop.inbox, lambda m: m["body"] == "answer")
            copy = await next_matching(
                phone.inbox, lambda m: m.xml.find(CARBONS + "received") is not None
            )
            assert (
                copy.xml.find(f"{CARBONS}received/{FWD}").findtext("{jabber:client}body")
                == "answer"
            )
            # private messages are not copied; the laptop never enabled carbons
            msg = b.make_message(mto=f"{aj}/laptop", mbody="just you", mtype="chat")
            msg.xml.append(msg.xml.makeelement(CARBONS + "private", {}))
            msg.send()
            await next_matching(laptop.inbox, lambda m: m["body"] == "just you")
            await nothing_matching(
                phone.inbox, lambda m: m.xml.find(CARBONS + "received") is not None, 1.0
            )
            phone.send_message(mto=bj, mbody="from the phone", mtype="chat")
            await next_matching(b.inbox, lambda m: m["body"] == "from the phone")
            await nothing_matching(
                laptop.inbox, lambda m: m.xml.find(CARBONS + "sent") is not None, 1.0
            )

    run(scenario())
