"""The client side of HTTP: framing checks, Host parsing, the guarded connection handler."""
