"""Small apps on real web frameworks, for the path differential tests."""
