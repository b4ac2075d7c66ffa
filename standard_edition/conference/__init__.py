"""Conferences: the rooms on conference.<domain> (XEP-0045), apart from any protocol."""
