"""Certificates that carry attestation evidence (RA-TLS)."""
