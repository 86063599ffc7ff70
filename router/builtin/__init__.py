"""Answers the router gives itself (no upstream)."""
