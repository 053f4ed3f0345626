"""Trust anchors.

Intel's SGX Root CA is the anchor of all real SGX and TDX evidence. It is public, self-signed, valid to
2049, and every DCAP verifier ships it; we embed it so that verification needs no download. Evidence
that chains to any other root is *simulated* as far as fedattest is concerned.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.dcap.chain import decode_fully
from fedattest.errors import FedattestError, VerificationError

INTEL_SGX_ROOT_CA_PEM = b"""\
-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""

# SHA-256 of the DER certificate; checked at load so a corrupted copy can never become an anchor.
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def intel_sgx_root_ca() -> x509.Certificate:
    return intel_sgx_root_ca_with_der()[0]


@lru_cache(maxsize=1)
def intel_sgx_root_ca_with_der() -> tuple[x509.Certificate, bytes]:
    """The embedded root and its DER, which a verifier keys its caches by (computed once, not per verifier)."""
    cert = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    der = cert.public_bytes(Encoding.DER)
    if hashlib.sha256(der).hexdigest() != INTEL_SGX_ROOT_CA_SHA256:
        raise FedattestError("embedded Intel SGX Root CA does not match its fingerprint")
    return cert, der


def load_trust_root(data: bytes) -> x509.Certificate:
    """A trust root given as DER or PEM bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
        decode_fully(cert, "trust root", "trust_root")
    except (ValueError, x509.InvalidVersion, VerificationError) as exc:
        raise FedattestError(f"trust root is not a valid X.509 certificate: {exc}") from None
    return cert


def is_intel_root(cert: x509.Certificate) -> bool:
    return is_intel_root_sha256(hashlib.sha256(cert.public_bytes(Encoding.DER)).digest())


def is_intel_root_sha256(digest: bytes) -> bool:
    """Whether ``digest`` (SHA-256 of a certificate's DER) is the Intel SGX Root CA's fingerprint."""
    return digest.hex() == INTEL_SGX_ROOT_CA_SHA256
