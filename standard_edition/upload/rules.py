"""XEP-0363 HTTP file upload: what may be uploaded, and how a file is served back.

Pure functions and values, no I/O: a slot request's fields checked and normalised, the
file-type filter, the size cap and the quota, and the headers of a download.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import quote

from standard_edition.config import Config

NS_UPLOAD = "urn:xmpp:http:upload:0"
MAX_FILENAME = 255  # characters; what common file systems take
SLOT_LIFETIME = 300.0  # seconds an unused slot stays valid
MAX_PENDING_SLOTS = 50  # unused slots one user may hold at once
# "type/subtype" then optional "; name=value" parameters, nothing a header could be split by
_MEDIA_TYPE = re.compile(
    r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
    r"(\s*;\s*[a-z0-9!#$&^_.+-]+=(\"[^\"\\\x00-\x1f\x7f]*\"|[a-z0-9!#$&^_.+-]+))*$",
    re.IGNORECASE,
)
# pictures a browser shows by itself without running anything (SVG can hold scripts: not here)
INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
)
# DESIGN §9: a download never runs as a page of upload.<domain>
CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"


class Refused(Exception):
    """A slot request the service turns down: the XMPP condition and the text the user sees."""

    def __init__(self, condition: str, text: str, max_file_size: int | None = None) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text
        self.max_file_size = max_file_size  # XEP-0363 §5: <file-too-large/> says the limit


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_size: int
    quota: int  # bytes per user; 0: none
    expire_after: int  # seconds; 0: files are kept
    blocked_extensions: frozenset[str]
    blocked_types: frozenset[str]

    @classmethod
    def from_config(cls, cfg: Config) -> Limits:
        return cls(
            max_file_size=cfg.upload_max_file_size,
            quota=cfg.upload_quota,
            expire_after=cfg.upload_expire_after,
            blocked_extensions=frozenset(cfg.upload_blocked_extensions),
            blocked_types=frozenset(cfg.upload_blocked_types),
        )


@dataclass(frozen=True, slots=True)
class SlotRequest:
    filename: str
    size: int
    content_type: str  # as declared, or guessed from the name
    declared: bool  # the client named a type: the PUT must send the same


def parse_request(filename: str | None, size: str | None, content_type: str | None) -> SlotRequest:
    """XEP-0363 §4: the <request/> attributes, checked; Refused('bad-request') if unusable."""
    name = (filename or "").strip()
    if not name:
        raise Refused("bad-request", "the request names no file")
    if len(name) > MAX_FILENAME:
        raise Refused("bad-request", f"the file name is longer than {MAX_FILENAME} characters")
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name) or name in (".", ".."):
        raise Refused("bad-request", "the file name must not hold paths or control characters")
    text = (size or "").strip()
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise Refused("bad-request", "size must be the file's length in bytes (1 or more)")
    declared = (content_type or "").strip()
    if declared:
        if not _MEDIA_TYPE.match(declared):
            raise Refused("bad-request", "content-type is not a media type (type/subtype)")
        return SlotRequest(name, int(text), declared, True)
    guessed = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    return SlotRequest(name, int(text), guessed, False)


def media_type(content_type: str) -> str:
    """The "type/subtype" of a Content-Type value, lower case, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


def extension(filename: str) -> str:
    """The last extension, as Windows reads it: trailing dots and spaces do not count."""
    name = filename.rstrip(". ").lower()
    _, dot, ext = name.rpartition(".")
    return f".{ext}" if dot and ext else ""


def blocked(req: SlotRequest, limits: Limits) -> str | None:
    """Why the file-type filter refuses this file, or None."""
    ext = extension(req.filename)
    if ext and ext in limits.blocked_extensions:
        return f"files of type {ext} may not be uploaded on this server"
    mt = media_type(req.content_type)
    if mt in limits.blocked_types or f"{mt.split('/', 1)[0]}/*" in limits.blocked_types:
        return f"files of type {mt} may not be uploaded on this server"
    return None


def check(req: SlotRequest, limits: Limits, used: int, pending: int) -> None:
    """The file-type filter, the size cap, then the quota; raises Refused."""
    why = blocked(req, limits)
    if why is not None:
        raise Refused("not-acceptable", why)
    if req.size > limits.max_file_size:
        # XEP-0363 §5 example 4
        raise Refused(
            "not-acceptable",
            f"File too large. The maximum file size is {limits.max_file_size} bytes",
            max_file_size=limits.max_file_size,
        )
    if pending >= MAX_PENDING_SLOTS:
        raise Refused("resource-constraint", "too many upload slots are waiting to be used")
    if limits.quota and used + req.size > limits.quota:
        left = max(0, limits.quota - used)
        raise Refused(
            "resource-constraint",
            f"Quota reached: your files may take {limits.quota} bytes, {left} are left",
        )


def same_type(declared: str, sent: str | None) -> bool:
    """XEP-0363 §4: the PUT's Content-Type is the one the slot was asked for."""
    return sent is not None and media_type(declared) == media_type(sent)


def content_disposition(filename: str, content_type: str) -> str:
    """Pictures shown in place; anything else saved as a file with its name (RFC 6266)."""
    kind = "inline" if media_type(content_type) in INLINE_TYPES else "attachment"
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._- ") else "_" for c in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def url_path(token: str, filename: str) -> str:
    """The path of a slot's URL: the secret, then the name clients show."""
    return f"/upload/{token}/{quote(filename, safe='')}"


_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


def token_of(path: bytes) -> str | None:
    """The secret in a request path made by url_path, or None for anything else."""
    parts = path.split(b"?", 1)[0].split(b"/")
    if len(parts) != 4 or parts[0] != b"" or parts[1] != b"upload":
        return None
    try:
        token = parts[2].decode("ascii")
    except UnicodeDecodeError:
        return None
    return token if _TOKEN.match(token) else None
