"""A real PCCS-compatible HTTP(S) server on 127.0.0.1 for tests.

It serves one collateral bundle through the PCCS/PCS v4 paths, re-creating the bodies a PCCS sends:
the PCK CRL as DER, the root CA CRL as hex (PCCS style), TCB info as ``{"tcbInfo":<exact signed
text>,"signature":"<hex>"}`` and QE identity likewise, so the signed bytes survive the trip; issuer
chains go in URL-encoded PEM headers. It counts requests per path and can be told to misbehave
(:class:`Behaviour`). Use it as a context manager: ``with serve(collateral) as server: server.url``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedattest.dcap.collateral import Collateral

V4 = "certification/v4"
PCKCRL = f"/sgx/{V4}/pckcrl"
ROOTCRL = f"/sgx/{V4}/rootcacrl"


def tcb_path(tee: str = "sgx") -> str:
    return f"/{tee}/{V4}/tcb"


def qe_path(tee: str = "sgx") -> str:
    return f"/{tee}/{V4}/qe/identity"


@dataclass
class Behaviour:
    """What the server does besides serving the bundle. Keys are URL paths without the query
    (e.g. ``/sgx/certification/v4/tcb``)."""

    status: dict[str, int] = field(default_factory=dict)  # answer with this HTTP status instead
    drop_header: set[str] = field(default_factory=set)  # answer without the issuer-chain header
    edit_body: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)  # rewrite the body
    tcb_body_format: str = '{{"tcbInfo":{text},"signature":"{sig}"}}'
    qe_body_format: str = '{{"enclaveIdentity":{text},"signature":"{sig}"}}'
    tcb_chain_header: str = "TCB-Info-Issuer-Chain"  # older services: SGX-TCB-Info-Issuer-Chain
    pcs: bool = False  # Intel PCS style: no rootcacrl path (404)
    extra: dict[str, bytes] = field(default_factory=dict)  # more paths and their bodies (a CRL distribution point)
    delay: float = 0.0  # seconds to wait before answering


class PccsServer:
    """The server; ``url`` is its base URL. ``requests`` counts requests per path, ``queries`` lists
    (path, parsed query) in order."""

    def __init__(self, collateral: Collateral, *, tls: tuple[Path, Path] | None = None) -> None:
        self.collateral = collateral
        self.behaviour = Behaviour()
        self.requests: Counter[str] = Counter()
        self.queries: list[tuple[str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler())
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval: shutdown() waits for the serve loop to notice (default 0.5 s per test).
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def total(self) -> int:
        """All requests so far."""
        return sum(self.requests.values())

    def start(self) -> PccsServer:
        self._thread.start()
        return self

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handler failures other than a client hanging up (see :class:`_QuietServer`)."""
        return self._httpd.errors

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, so only call it when serving
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def _routes(self, path: str, query: dict[str, list[str]]) -> tuple[bytes, dict[str, str]] | None:
        """(body, headers) for a path, or None for 404."""
        c, b = self.collateral, self.behaviour
        quote = urllib.parse.quote  # URL-encodes everything but letters, digits and "_.-~/"
        for tee in ("sgx", "tdx"):
            if path == tcb_path(tee):
                fmspc = query.get("fmspc", [""])[0]
                if json.loads(c.tcb_info)["fmspc"].upper() != fmspc.upper():
                    return None  # PCS answers 404 for an FMSPC it has no TCB info for
                body = b.tcb_body_format.format(text=c.tcb_info, sig=c.tcb_info_signature.hex())
                return body.encode(), {b.tcb_chain_header: quote(c.tcb_info_issuer_chain)}
            if path == qe_path(tee):
                body = b.qe_body_format.format(text=c.qe_identity, sig=c.qe_identity_signature.hex())
                return body.encode(), {"SGX-Enclave-Identity-Issuer-Chain": quote(c.qe_identity_issuer_chain)}
        if path == PCKCRL and query.get("ca", [""])[0] in ("processor", "platform"):
            return c.pck_crl, {"SGX-PCK-CRL-Issuer-Chain": quote(c.pck_crl_issuer_chain)}
        if path == ROOTCRL and not b.pcs:
            return c.root_ca_crl.hex().encode(), {}  # a PCCS serves the root CA CRL as hex
        if path in b.extra:
            return b.extra[path], {}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                path, query = parts.path, urllib.parse.parse_qs(parts.query)
                with server._lock:
                    server.requests[path] += 1
                    server.queries.append((path, query))
                b = server.behaviour
                if b.delay:
                    time.sleep(b.delay)
                status = b.status.get(path)
                found = server._routes(path, query)
                if status is not None or found is None:
                    self.send_response(status or 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, headers = found
                if path in b.edit_body:
                    body = b.edit_body[path](body)
                self.send_response(200)
                if path not in b.drop_header:
                    for name, value in headers.items():
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class _QuietServer(ThreadingHTTPServer):
    """The stock server prints a handler's traceback to ``sys.stderr``, which lands in whatever a test is
    capturing at that moment (a ``CliRunner`` result's stderr). A client that hangs up mid-request (a
    pooled connection closed, a TLS handshake the client refused) is normal and ignored; anything else is
    kept in ``errors`` and fails the test when :func:`serve` exits."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.errors: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            return
        self.errors.append(traceback.format_exc())


@contextmanager
def serve(collateral: Collateral, *, tls: tuple[Path, Path] | None = None) -> Iterator[PccsServer]:
    """A running :class:`PccsServer` for ``collateral`` (HTTPS with ``tls`` = (cert, key) PEM files)."""
    server = PccsServer(collateral, tls=tls).start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, "the PCCS server's request handler failed:\n" + "\n".join(server.errors)


def self_signed_tls(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test PCCS")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "pccs.pem", directory / "pccs.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
