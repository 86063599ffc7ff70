"""Routing: path normalization, the immutable route table, providers and the table swap."""
