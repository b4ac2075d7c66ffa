"""XEP-0077 In-Band Registration, for one thing only: a signed-in user changes their password.

Accounts are made and removed by the admin (se-ctl), so the stream offers no registration
feature and an unauthenticated stream cannot send an iq at all (RFC 6120 §6.4: it ends with
<not-authorized/>). After sign-in, disco#info lists `jabber:iq:register` and:

- a get answers <registered/> with the user name and an empty password field (§3.2.1);
- a set with the user's own name and a password changes it (§3.3), through the same path as
  `se-ctl user passwd`: new SCRAM keys and SIP digest HA1s, the password itself forgotten.
  A password PRECIS refuses (RFC 8265 OpaqueString) gets <not-acceptable/> with the reason;
  a set without both fields gets <bad-request/>;
- a set naming another user is a registration, and <remove/> a cancellation: both get
  <not-allowed/>, saying the administrator manages accounts.

The user's other sessions stay signed in (as Prosody does): they proved the old password, the
next sign-in needs the new one. An admin who wants everyone out disables the account.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python import failure, log

from standard_edition.core.accounts import AccountError
from standard_edition.core.jid import InvalidJID, prepare_username
from standard_edition.xmpp.stanzas import StanzaError, result_reply, sub

if TYPE_CHECKING:
    from standard_edition.xmpp.c2s import C2SProtocol

NS_REGISTER = "jabber:iq:register"
NS_DATA = "jabber:x:data"
R = "{" + NS_REGISTER + "}"
X = "{" + NS_DATA + "}"
MAX_PASSWORD = 1024  # characters; a longer one is refused before any key derivation


def handle(stream: C2SProtocol, iq: ET.Element, q: ET.Element) -> ET.Element | Deferred[Any]:
    assert stream.jid is not None and stream.jid.local is not None
    user = stream.jid.local
    if iq.get("type") == "get":
        reply = result_reply(iq)
        out = sub(reply, R + "query")
        sub(out, R + "instructions", text="Send your user name and a new password to change it.")
        sub(out, R + "registered")
        sub(out, R + "username", text=user)
        sub(out, R + "password")
        return reply
    if q.find(R + "remove") is not None:
        raise StanzaError("not-allowed", "accounts are removed by the administrator")
    username, password = _fields(q)
    if username is None or password is None:
        raise StanzaError("bad-request", "a password change needs <username/> and <password/>")
    try:
        same = prepare_username(username) == user
    except InvalidJID:
        same = False
    if not same:
        raise StanzaError(
            "not-allowed",
            "registration is off: accounts are made by the administrator; "
            "you may change only your own password",
        )
    if len(password) > MAX_PASSWORD:
        raise StanzaError("not-acceptable", f"a password has at most {MAX_PASSWORD} characters")
    d: Deferred[Any] = stream.ctx.router.accounts.set_password(user, password)

    def changed(_: object) -> ET.Element:
        log.msg(f"c2s {stream.address}: {user} changed their password (XEP-0077)")
        return result_reply(iq)

    def refused(f: failure.Failure) -> ET.Element:
        if f.check(AccountError):
            code = f.value.code
            if code == "invalid":
                raise StanzaError("not-acceptable", f.value.message)
            if code == "not-found":
                raise StanzaError("not-allowed", "the account no longer exists")
        return f  # type: ignore[return-value]  # anything else: internal-server-error

    return d.addCallbacks(changed, refused)


def _fields(q: ET.Element) -> tuple[str | None, str | None]:
    """The user name and password, from the legacy fields or a submitted form (§4)."""
    form = q.find(X + "x")
    if form is not None and form.get("type") == "submit":
        values = {f.get("var", ""): f.findtext(X + "value") for f in form.findall(X + "field")}
        return values.get("username"), values.get("password")
    return q.findtext(R + "username"), q.findtext(R + "password")
