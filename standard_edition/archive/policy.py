"""Who is archived: the policy (DESIGN §6) and the one function that applies it to a message."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from standard_edition.config import Config

MODES = ("off", "all", "users")
# the run-time settings (main store's `settings` table) that override config.toml, DESIGN §8
KEYS = ("mode", "users", "internal", "external", "critical", "keep_days")


class PolicyError(ValueError):
    """A policy value that cannot be used; str() is one line naming the setting."""


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str = "off"  # off | all | users
    users: frozenset[str] = field(default_factory=frozenset)  # bare addresses, when mode = users
    internal: bool = True  # both parties in the served domain
    external: bool = True  # one party elsewhere (federated) or signed in through the edge
    critical: bool = False  # refuse what cannot be archived (Skype's BlockOnArchiveFailure)
    keep_days: int = 0  # retention; 0 keeps everything

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["users"] = sorted(self.users)
        return out


def checked(base: Policy, **changes: Any) -> Policy:
    """base with changes applied, each validated; PolicyError names the bad one."""
    for key, value in changes.items():
        if key not in KEYS:
            raise PolicyError(f"archive.{key}: unknown setting")
        if key == "mode" and value not in MODES:
            raise PolicyError(f"archive.mode: {value!r} is not one of {', '.join(MODES)}")
        if key in ("internal", "external", "critical") and not isinstance(value, bool):
            raise PolicyError(f"archive.{key}: expected true or false, got {value!r}")
        if key == "keep_days" and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise PolicyError(f"archive.keep_days: expected a whole number >= 0, got {value!r}")
        if key == "users":
            if not isinstance(value, list | tuple | frozenset | set) or not all(
                isinstance(u, str) and "@" in u for u in value
            ):
                raise PolicyError(f"archive.users: expected a list of user@domain, got {value!r}")
            changes[key] = frozenset(u.lower() for u in value)
    return replace(base, **changes)


ORIGINS = ("internal", "remote", "federated")
# what `se-ctl archive search --origin` takes: the stored values, and two names for groups
ORIGIN_FILTERS: dict[str, tuple[str, ...]] = {
    "internal": ("internal",),
    "remote": ("remote",),
    "edge": ("remote",),  # a local user signed in through the edge
    "federated": ("federated",),
    "external": ("remote", "federated"),  # what the policy's `external` switch covers
}


def origin_of(sender_domain: str, to_domain: str, domain: str) -> str:
    """internal: both parties served here; federated: one is another domain's.
    ("remote", a local sender signed in through the edge, comes from its session.)"""
    return (
        "internal" if is_ours(sender_domain, domain) and is_ours(to_domain, domain) else "federated"
    )


def is_ours(host: str, domain: str) -> bool:
    """The served domain or one of its services (conference.<domain>)."""
    return host == domain or host.endswith("." + domain)


def wanted(policy: Policy, sender: str, recipient: str, origin: str) -> bool:
    """Is a message between these bare addresses archived under this policy?"""
    if policy.mode == "off":
        return False
    if origin == "internal" and not policy.internal:
        return False
    if origin != "internal" and not policy.external:
        return False
    if policy.mode == "all":
        return True
    return sender in policy.users or recipient in policy.users


def from_config(cfg: Config) -> Policy:
    """The policy config.toml gives (before run-time settings)."""
    return Policy(
        mode=cfg.archive_mode,
        users=frozenset(u.lower() for u in cfg.archive_users),
        internal=cfg.archive_internal,
        external=cfg.archive_external,
        critical=cfg.archive_critical,
        keep_days=cfg.archive_keep_days,
    )
