"""`se-ctl console`: the Textual console (dashboard, users, sessions, presence, conferences,
archive, federation, log)."""
