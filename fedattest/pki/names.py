"""The names fedattest puts in certificates (subjectAltName URIs), shared by those who issue them (the
coordinator) and those who check them (update signatures, passports). Pure constants."""

from __future__ import annotations

MEMBER_URI = "urn:fedattest:{federation}:member:{member}"  # a member's certificate, one per activation
TOKEN_SIGNER_URI = "urn:fedattest:{federation}:token-signer"  # noqa: S105 - a name, not a secret: the token key's certificate
