"""A real PCCS-compatible HTTP(S) server on 127.0.0.1 for tests: serves one collateral bundle through
the PCCS/PCS v4 paths, counts requests, and can be told to misbehave."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
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


@dataclass
class Behaviour:
    """What the server does. Paths are the URL path without the query (e.g. ``/sgx/certification/v4/tcb``)."""

    status: dict[str, int] = field(default_factory=dict)  # path -> HTTP status to return instead of 200
    drop_header: set[str] = field(default_factory=set)  # path -> serve without its issuer-chain header
    edit_body: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    tcb_body_format: str = '{{"tcbInfo":{text},"signature":"{sig}"}}'
    qe_body_format: str = '{{"enclaveIdentity":{text},"signature":"{sig}"}}'
    pcs: bool = False  # Intel PCS style: no rootcacrl path
    extra: dict[str, bytes] = field(default_factory=dict)  # path -> body (e.g. a CRL distribution point)


class PccsServer:
    def __init__(self, collateral: Collateral, *, tls: tuple[Path, Path] | None = None) -> None:
        self.collateral = collateral
        self.behaviour = Behaviour()
        self.requests: Counter[str] = Counter()
        self.queries: list[tuple[str, dict[str, list[str]]]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def start(self) -> PccsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, so only call it when serving
            self._httpd.shutdown()
        self._httpd.server_close()

    def _routes(self, path: str, query: dict[str, list[str]]) -> tuple[bytes, dict[str, str]] | None:
        c = self.collateral
        quote = urllib.parse.quote
        for tee in ("sgx", "tdx"):
            base = f"/{tee}/certification/v4"
            if path == f"{base}/tcb":
                fmspc = query.get("fmspc", [""])[0]
                if json.loads(c.tcb_info)["fmspc"].upper() != fmspc.upper():
                    return None  # PCS answers 404 for an FMSPC it has no TCB info for
                body = self.behaviour.tcb_body_format.format(text=c.tcb_info, sig=c.tcb_info_signature.hex())
                return body.encode(), {"TCB-Info-Issuer-Chain": quote(c.tcb_info_issuer_chain)}
            if path == f"{base}/qe/identity":
                body = self.behaviour.qe_body_format.format(text=c.qe_identity, sig=c.qe_identity_signature.hex())
                return body.encode(), {"SGX-Enclave-Identity-Issuer-Chain": quote(c.qe_identity_issuer_chain)}
        if path == "/sgx/certification/v4/pckcrl":
            return c.pck_crl, {"SGX-PCK-CRL-Issuer-Chain": quote(c.pck_crl_issuer_chain)}
        if path == "/sgx/certification/v4/rootcacrl" and not self.behaviour.pcs:
            return c.root_ca_crl.hex().encode(), {}  # PCCS serves the root CA CRL as hex
        if path in self.behaviour.extra:
            return self.behaviour.extra[path], {}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                path, query = parts.path, urllib.parse.parse_qs(parts.query)
                server.requests[path] += 1
                server.queries.append((path, query))
                status = server.behaviour.status.get(path)
                found = server._routes(path, query)
                if status is not None or found is None:
                    self.send_response(status or 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, headers = found
                if path in server.behaviour.edit_body:
                    body = server.behaviour.edit_body[path](body)
                self.send_response(200)
                for name, value in headers.items():
                    if path not in server.behaviour.drop_header:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@contextmanager
def serve(collateral: Collateral, *, tls: tuple[Path, Path] | None = None) -> Iterator[PccsServer]:
    server = PccsServer(collateral, tls=tls).start()
    try:
        yield server
    finally:
        server.stop()


def self_signed_tls(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files: (cert, key)."""
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
