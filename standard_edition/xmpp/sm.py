"""XEP-0198 stream management: acknowledgements, and resuming a session on a new connection.

The counters and the queue of unacknowledged stanzas are plain state here; c2s.py feeds it.
Handled counts wrap at 2^32 (§4). A session whose connection drops stays bound, silently
queueing, for RESUME_TIMEOUT seconds; if it is not resumed by then its unacknowledged
messages are routed again (to the user's other clients or offline storage), never dropped.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

NS_SM = "urn:xmpp:sm:3"
SM = "{" + NS_SM + "}"
RESUME_TIMEOUT = 300  # seconds a dropped session waits to be resumed (announced as max)
MAX_UNACKED = 5000  # a client that never acks is cut off rather than grow the queue forever
REQUEST_EVERY = 5  # ask for an ack after this many unacknowledged stanzas
WRAP = 1 << 32


class SmError(Exception):
    """A client's stream management element the server cannot accept."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


@dataclass
class SmState:
    resumable: bool
    id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    handled_in: int = 0  # stanzas received from the client
    sent_out: int = 0  # stanzas sent to the client
    acked_out: int = 0  # the client's last <a h/>
    # bytes: a stanza kept as it was written (a presence serialised once for every watcher)
    unacked: deque[tuple[int, ET.Element | bytes]] = field(default_factory=deque)
    requested: bool = False

    def received(self) -> None:
        self.handled_in = (self.handled_in + 1) % WRAP

    def sent(self, el: ET.Element | bytes) -> bool:
        """Record an outgoing stanza; True when the server should ask for an ack now."""
        self.sent_out = (self.sent_out + 1) % WRAP
        self.unacked.append((self.sent_out, el))
        if len(self.unacked) > MAX_UNACKED:
            raise SmError("resource-constraint", "too many unacknowledged stanzas")
        if not self.requested and len(self.unacked) >= REQUEST_EVERY:
            self.requested = True
            return True
        return False

    def ack(self, h: int) -> None:
        """§4: the client has handled every stanza up to h."""
        outstanding = (self.sent_out - self.acked_out) % WRAP
        done = (h - self.acked_out) % WRAP
        if done > outstanding:
            raise SmError("undefined-condition", f"h={h} acknowledges stanzas never sent")
        for _ in range(done):
            if self.unacked:
                self.unacked.popleft()
        self.acked_out = h % WRAP
        self.requested = False


def parse_h(el: ET.Element) -> int:
    try:
        h = int(el.get("h", ""))
    except ValueError:
        raise SmError("bad-request", "h must be a number") from None
    if not 0 <= h < WRAP:
        raise SmError("bad-request", "h is out of range")
    return h


def element(name: str, **attrs: str) -> bytes:
    parts = "".join(f" {k}='{v}'" for k, v in attrs.items())
    return f"<{name} xmlns='{NS_SM}'{parts}/>".encode()


def failed(condition: str, h: int | None = None) -> bytes:
    extra = f" h='{h}'" if h is not None else ""
    return (
        f"<failed xmlns='{NS_SM}'{extra}>"
        f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    ).encode()
