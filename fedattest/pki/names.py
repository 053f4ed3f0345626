"""The names fedattest puts in certificates (subjectAltName URIs), shared by those who issue them (the
coordinator) and those who check them (update signatures, passports). Pure."""

from __future__ import annotations

from cryptography import x509

_PREFIX = "urn:fedattest:"

MEMBER_URI = "urn:fedattest:{federation}:member:{member}"  # a member's certificate, one per activation
TOKEN_SIGNER_URI = "urn:fedattest:{federation}:token-signer"  # noqa: S105 - a name, not a secret: the token key's certificate


def certificate_uris(cert: x509.Certificate) -> list[str] | None:
    """The certificate's subjectAltName URIs; None when it has no subjectAltName at all."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return list(sans.get_values_for_type(x509.UniformResourceIdentifier))


def members_named(cert: x509.Certificate) -> list[tuple[str, str]] | None:
    """(federation, member) for every well-formed member URI the certificate carries (exactly
    :data:`MEMBER_URI`, both parts non-empty); None when it has no subjectAltName at all."""
    uris = certificate_uris(cert)
    if uris is None:
        return None
    found = []
    for uri in uris:
        head, sep, member = uri.rpartition(":member:")
        federation = head[len(_PREFIX) :]
        if (
            sep
            and head.startswith(_PREFIX)
            and federation
            and member
            and MEMBER_URI.format(federation=federation, member=member) == uri
        ):
            found.append((federation, member))
    return found
