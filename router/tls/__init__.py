"""TLS termination: the certificate store (SNI), its sources, and listener policy."""
