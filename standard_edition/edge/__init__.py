"""The edge: listeners that face outside (remote users, federation) and their limits."""
