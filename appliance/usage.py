"""The error se-ctl exits 2 with: a command line that does not fit the command."""

from __future__ import annotations


class UsageError(Exception):
    """A bad command line; str() is the one line printed, and se-ctl exits 2."""
