"""Compliance archiving (DESIGN §6): policy, the append-only hash-chained store, search, export."""
