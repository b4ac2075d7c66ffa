"""XEP-0050 ad-hoc commands a stock client shows in its menu: presence choices of DESIGN §4.

Each command is one form (XEP-0004): the client executes the node, gets the form, submits it,
and the server answers `completed` with a note. A client may also submit the form with the
first request. Missing or bad fields are a `bad-request` with `<bad-payload/>`.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from standard_edition.core.jid import InvalidJID, parse_jid
from standard_edition.presence.access import LEVEL_NAMES, LEVEL_NAMES_OUT, Level
from standard_edition.presence.model import MAX_NOTE, STATE_NAMES, Manual
from standard_edition.xmpp.stanzas import C, StanzaError, error_reply, sub

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
CMD = "{" + NS_COMMANDS + "}"
X = "{" + NS_DATA + "}"
AUTOMATIC = "automatic"


class BadForm(Exception):
    """A submitted form the command cannot use; str() says why."""


@dataclass(frozen=True, slots=True)
class Field:
    var: str
    label: str
    type: str  # XEP-0004 field type
    required: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Command:
    node: str
    name: str
    instructions: str
    fields: tuple[Field, ...]
    run: Callable[[C2SProtocol, dict[str, list[str]]], str]  # returns the note for the user


def _one(values: dict[str, list[str]], var: str) -> str | None:
    got = values.get(var) or []
    text = "\n".join(got).strip()
    return text or None


def _until(text: str | None, now: datetime) -> float | None:
    if not text:
        return None
    try:
        if len(text) <= 5 and ":" in text:
            hh, mm = (int(x) for x in text.split(":"))
            at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
            if at <= now:
                at += timedelta(days=1)
        else:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.astimezone()
    except ValueError:
        raise BadForm("until: give HH:MM or an ISO 8601 date-time") from None
    if at <= now:
        raise BadForm("until: that time has passed")
    return at.timestamp()


def _set_state(stream: C2SProtocol, values: dict[str, list[str]]) -> str:
    state = _one(values, "state")
    if state is None:
        raise BadForm("state: choose a state")
    user = stream.jid.local  # type: ignore[union-attr]
    service = stream.ctx.router.presence
    if state == AUTOMATIC:
        service.set_manual(user, None)  # type: ignore[arg-type]
        return "Your state now follows your devices."
    if state not in STATE_NAMES:
        raise BadForm(f"state: unknown state {state[:40]!r}")
    now = datetime.fromtimestamp(stream.ctx.reactor.seconds()).astimezone()
    until = _until(_one(values, "until"), now)
    code, activity = STATE_NAMES[state]
    service.set_manual(user, Manual(code, activity, until))  # type: ignore[arg-type]
    return f"Your state is {state}" + (
        " until the time you gave." if until else " until you change it."
    )


def _set_oof(stream: C2SProtocol, values: dict[str, list[str]]) -> str:
    note = _one(values, "note")
    if note is not None and len(note) > MAX_NOTE:
        raise BadForm(f"note: at most {MAX_NOTE} characters")
    stream.ctx.router.presence.set_oof_note(stream.jid.local, note)  # type: ignore[arg-type]
    return "Out-of-office note set." if note else "Out-of-office note cleared."


def _set_privacy(stream: C2SProtocol, values: dict[str, list[str]]) -> str:
    raw = _one(values, "privacy")
    if raw not in ("1", "true", "0", "false"):
        raise BadForm("privacy: true or false")
    on = raw in ("1", "true")
    stream.ctx.router.presence.set_privacy(stream.jid.local, on)  # type: ignore[arg-type]
    if on:
        return "Privacy mode on: only people on your contact list see your presence."
    return "Privacy mode off: colleagues see your presence."


def _set_level(stream: C2SProtocol, values: dict[str, list[str]]) -> str:
    contact_text = _one(values, "contact")
    level_text = _one(values, "level")
    if contact_text is None or level_text is None:
        raise BadForm("contact and level are both required")
    try:
        contact = parse_jid(contact_text).bare
    except InvalidJID:
        raise BadForm("contact: not a valid address") from None
    if level_text != "default" and level_text not in LEVEL_NAMES:
        raise BadForm(f"level: unknown level {level_text[:40]!r}")
    user = stream.jid.local  # type: ignore[union-attr]
    service = stream.ctx.router.presence
    level = None if level_text == "default" else LEVEL_NAMES[level_text]
    if level is Level.BLOCKED:
        service.block(user, [contact])  # type: ignore[arg-type]
    else:
        if service.is_blocked(user, contact):  # type: ignore[arg-type]
            service.unblock(user, [contact])  # type: ignore[arg-type]
        service.set_level(user, contact, level)  # type: ignore[arg-type]
    return f"{contact} is now {service.level(user, contact).label}."  # type: ignore[arg-type]


STATE_OPTIONS = (AUTOMATIC, *sorted(STATE_NAMES))
LEVEL_OPTIONS = ("default", *(LEVEL_NAMES_OUT[level] for level in Level))

COMMANDS = {
    c.node: c
    for c in (
        Command(
            "presence/state",
            "Set my presence",
            "Choose a state to show to your contacts; 'automatic' follows your devices again.",
            (
                Field("state", "State", "list-single", True, STATE_OPTIONS),
                Field("until", "Until (HH:MM or date-time, optional)", "text-single"),
            ),
            _set_state,
        ),
        Command(
            "presence/oof",
            "Out-of-office note",
            "Workgroup and Friends and Family contacts see this note; leave it empty to clear.",
            (Field("note", "Note", "text-multi"),),
            _set_oof,
        ),
        Command(
            "presence/privacy",
            "Privacy mode",
            "With privacy mode on, only people on your contact list see your presence.",
            (Field("privacy", "Privacy mode", "boolean", True),),
            _set_privacy,
        ),
        Command(
            "presence/access-level",
            "Access level of a contact",
            "What a contact may see of your presence.",
            (
                Field("contact", "Contact", "jid-single", True),
                Field("level", "Access level", "list-single", True, LEVEL_OPTIONS),
            ),
            _set_level,
        ),
    )
}


def command_items(domain: str) -> list[ET.Element]:
    """disco#items on the commands node (XEP-0050 §2.2)."""
    return [
        ET.Element(
            "{http://jabber.org/protocol/disco#items}item",
            {"jid": domain, "node": c.node, "name": c.name},
        )
        for c in COMMANDS.values()
    ]


def execute(stream: C2SProtocol, iq: ET.Element, cmd_el: ET.Element) -> ET.Element:
    if iq.get("type") != "set":
        raise StanzaError("bad-request", "commands are executed with an iq set")
    command = COMMANDS.get(cmd_el.get("node", ""))
    if command is None:
        raise StanzaError("item-not-found", "no such command")
    action = cmd_el.get("action", "execute")
    session = cmd_el.get("sessionid") or secrets.token_hex(8)
    if action == "cancel":
        return _reply(iq, command, session, "canceled")
    if action not in ("execute", "complete", "next"):
        return _bad(iq, "bad-action", f"unknown action {action[:20]!r}")
    form = cmd_el.find(X + "x")
    if form is None or form.get("type") != "submit":
        # the first stage: the form to fill in
        reply = _reply(iq, command, session, "executing")
        cmd = reply[0]
        actions = sub(cmd, CMD + "actions", {"execute": "complete"})
        sub(actions, CMD + "complete")
        cmd.append(_form(command))
        return reply
    values = {
        f.get("var", ""): [(v.text or "") for v in f.findall(X + "value")]
        for f in form.findall(X + "field")
    }
    missing = [f.var for f in command.fields if f.required and not _one(values, f.var)]
    if missing:
        return _bad(iq, "bad-payload", "missing: " + ", ".join(missing))
    try:
        note = command.run(stream, values)
    except BadForm as e:
        return _bad(iq, "bad-payload", str(e))
    reply = _reply(iq, command, session, "completed")
    sub(reply[0], CMD + "note", {"type": "info"}, note)
    return reply


def _reply(iq: ET.Element, command: Command, session: str, status: str) -> ET.Element:
    reply = ET.Element(C + "iq", {"type": "result", "id": iq.get("id", "")})
    if iq.get("from"):
        reply.set("to", iq.get("from", ""))
    if iq.get("to"):
        reply.set("from", iq.get("to", ""))
    sub(reply, CMD + "command", {"node": command.node, "sessionid": session, "status": status})
    return reply


def _bad(iq: ET.Element, specific: str, text: str) -> ET.Element:
    # XEP-0050 §4.6: a general condition plus the commands-specific one
    return error_reply(iq, "bad-request", text, app=CMD + specific)


def _form(command: Command) -> ET.Element:
    x = ET.Element(X + "x", {"type": "form"})
    sub(x, X + "title", text=command.name)
    sub(x, X + "instructions", text=command.instructions)
    for f in command.fields:
        el = sub(x, X + "field", {"var": f.var, "label": f.label, "type": f.type})
        if f.required:
            sub(el, X + "required")
        for opt in f.options:
            o = sub(el, X + "option", {"label": opt.replace("-", " ")})
            sub(o, X + "value", text=opt)
    return x
