"""Collateral from a PCCS or Intel's PCS (API v4), with an on-disk cache.

For a quote, :meth:`PccsClient.fetch_for_quote` reads the FMSPC and the PCK CA (processor or
platform) from the PCK certificate in the quote and fetches:

- ``GET {base}/sgx/certification/v4/pckcrl?ca=processor|platform&encoding=der`` — the PCK CRL;
  header ``SGX-PCK-CRL-Issuer-Chain`` (URL-encoded PEM);
- ``GET {base}/{sgx|tdx}/certification/v4/tcb?fmspc=HEX`` — ``{"tcbInfo": {...}, "signature": "hex"}``;
  header ``TCB-Info-Issuer-Chain`` (``SGX-TCB-Info-Issuer-Chain`` on older services);
- ``GET {base}/{sgx|tdx}/certification/v4/qe/identity?update=standard`` —
  ``{"enclaveIdentity": {...}, "signature": "hex"}``; header ``SGX-Enclave-Identity-Issuer-Chain``;
- the root CA CRL: a PCCS serves it at ``{base}/sgx/certification/v4/rootcacrl`` (hex of the DER);
  Intel's PCS does not, so when that path fails the CRL is fetched from the CRL distribution point of
  the root certificate in the QE identity issuer chain.

TCB info and QE identity are signed over their exact bytes, so the signed text is sliced out of the
response body, never re-serialised. Nothing here is trusted: the verifier checks every signature up to
its trust root. The cache therefore only saves round trips: it holds one assembled collateral bundle
per (service, TEE, FMSPC, CA), written atomically, private to the user, and it is refreshed before
the bundle's earliest ``nextUpdate``.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from fedattest.dcap.chain import load_pem_chain
from fedattest.dcap.collateral import Collateral, validity_window
from fedattest.errors import CollateralError, FedattestError
from fedattest.files import PRIVATE_DIR, atomic_write
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension
from fedattest.sgx.quote import Quote, TeeType

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Refresh cached collateral this long before it expires, so a verification a little later still finds
# it valid. Intel re-issues TCB info and QE identity well before nextUpdate.
REFRESH_MARGIN = timedelta(hours=1)
CACHE_FORMAT = "fedattest-pccs-cache-v1"


def normalize_base_url(url: str) -> str:
    """``https://host:8081/`` or ``https://host:8081/sgx/certification/v4`` → ``https://host:8081``."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise CollateralError(f"PCCS URL must be http(s)://host[:port][/path], got {url!r}")
    if parsed.query or parsed.fragment:
        raise CollateralError(f"PCCS URL must not have a query or fragment: {url!r}")
    path = parsed.path.rstrip("/")
    for suffix in ("/sgx/certification/v4", "/tdx/certification/v4"):
        path = path.removesuffix(suffix)
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def pck_ca_type(leaf: x509.Certificate) -> str:
    """``processor`` or ``platform``: which PCK CA issued ``leaf`` (by the issuer's common name, as
    Intel names them: "Intel SGX PCK Processor CA" / "Intel SGX PCK Platform CA")."""
    names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    return "platform" if "platform" in common_name.lower() else "processor"


def quote_platform(quote: Quote) -> tuple[str, str, str]:
    """(tee ``sgx``/``tdx``, FMSPC as upper-case hex, PCK CA type) for the quote's platform."""
    try:
        leaf = load_pem_chain(quote.pck_chain_pem, "PCK certificate chain", "pck_chain")[0]
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
        raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
        fmspc = PckExtension.parse(raw).fmspc
    except (ValueError, IndexError, x509.ExtensionNotFound, FedattestError) as exc:
        raise CollateralError(f"cannot read the FMSPC from the quote's PCK certificate: {exc}") from None
    tee = "tdx" if quote.header.tee_type == TeeType.TDX else "sgx"
    return tee, fmspc.hex().upper(), pck_ca_type(leaf)


def signed_member(body: str, key: str, what: str) -> tuple[str, bytes]:
    """From ``{"<key>": {...}, "signature": "hex"}``: the exact text of the ``key`` member's value and
    the decoded signature. The text is sliced from ``body``, so its bytes are the ones that were signed."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    values: dict[str, Any] = {}
    try:
        i = _skip_ws(body, 0)
        if body[i : i + 1] != "{":
            raise ValueError("not a JSON object")
        i = _skip_ws(body, i + 1)
        while body[i : i + 1] != "}":
            if body[i : i + 1] != '"':
                raise ValueError(f"expected a member name at offset {i}")
            name, i = json.decoder.scanstring(body, i + 1)  # type: ignore[attr-defined]
            i = _skip_ws(body, i)
            if body[i : i + 1] != ":":
                raise ValueError(f"expected ':' at offset {i}")
            i = _skip_ws(body, i + 1)
            value, end = decoder.raw_decode(body, i)
            if name in values:
                raise ValueError(f"duplicate member {name!r}")
            spans[name], values[name] = (i, end), value
            i = _skip_ws(body, end)
            if body[i : i + 1] == ",":
                i = _skip_ws(body, i + 1)
            elif body[i : i + 1] != "}":
                raise ValueError(f"expected ',' or '}}' at offset {i}")
        if body[_skip_ws(body, i + 1) :]:
            raise ValueError("data after the JSON object")
    except (ValueError, IndexError) as exc:
        raise CollateralError(f"{what} response is not valid JSON: {exc}") from None
    if not isinstance(values.get(key), dict) or not isinstance(values.get("signature"), str):
        raise CollateralError(f"{what} response must be an object with {key!r} (an object) and 'signature' (a hex string)")
    try:
        signature = bytes.fromhex(values["signature"])
    except ValueError:
        raise CollateralError(f"{what} signature is not hex") from None
    start, end = spans[key]
    return body[start:end], signature


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def crl_der(body: bytes, what: str) -> bytes:
    """A CRL as served: DER, PEM, or hex of DER (PCCS's root CA CRL) → DER."""
    stripped = body.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        except (ValueError, x509.InvalidVersion):
            raise CollateralError(f"{what} is not a valid PEM CRL") from None
    if stripped[:1] == b"\x30":
        return body
    try:
        return bytes.fromhex(stripped.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CollateralError(f"{what} is neither DER, PEM nor hex") from None


def root_crl_url(issuer_chain_pem: str) -> str:
    """The CRL distribution point of the last (root) certificate of an issuer chain."""
    try:
        root = load_pem_chain(issuer_chain_pem, "QE identity issuer chain", "qe_identity_chain")[-1]
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (IndexError, x509.ExtensionNotFound, FedattestError):
        raise CollateralError("the root CA certificate names no CRL distribution point") from None
    for point in points:
        for general_name in point.full_name or []:
            if isinstance(general_name, x509.UniformResourceIdentifier):
                return str(general_name.value)
    raise CollateralError("the root CA certificate names no CRL distribution point URL")


class PccsClient:
    """Fetches collateral from a PCCS/PCS (API v4) and caches it in ``cache_dir`` (None: no cache).

    ``verify`` is the TLS verification for the service: True (system CAs) or a path to a PEM bundle
    (e.g. a local PCCS's self-signed certificate). Turning TLS verification off is not offered.
    All failures raise :class:`CollateralError` naming the URL and what went wrong.
    """

    def __init__(
        self, base_url: str, *, cache_dir: Path | str | None = None, verify: bool | str = True, timeout: float = 30.0
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if verify is False:
            raise CollateralError("TLS verification cannot be turned off; pass a CA bundle path for a self-signed PCCS")
        tls: ssl.SSLContext | bool = True
        if isinstance(verify, str):
            try:
                tls = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise CollateralError(f"cannot load the PCCS CA bundle {verify!r}: {exc}") from None
        self._http = httpx.Client(verify=tls, timeout=timeout, follow_redirects=True, headers={"Accept": "*/*"})
        self.requests = 0  # HTTP requests made (for tests and logs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PccsClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _get(self, url: str, *, missing_ok: bool = False) -> httpx.Response | None:
        """GET ``url``: the response on 200; None on 404 when ``missing_ok``; CollateralError otherwise."""
        self.requests += 1
        try:
            with self._http.stream("GET", url) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise CollateralError(f"{url}: response larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB")
                if response.status_code == 404 and missing_ok:
                    return None
                if response.status_code != 200:
                    raise CollateralError(f"{url}: HTTP {response.status_code} {response.reason_phrase}".rstrip())
                return httpx.Response(200, headers=response.headers, content=bytes(body), request=response.request)
        except httpx.HTTPError as exc:
            raise CollateralError(f"{url}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _header(response: httpx.Response, *names: str) -> str:
        for name in names:
            value = response.headers.get(name)
            if value:
                return urllib.parse.unquote(value)
        raise CollateralError(f"{response.request.url}: response has no {names[0]} header")

    def _require(self, url: str) -> httpx.Response:
        response = self._get(url)
        assert response is not None  # only missing_ok returns None
        return response

    def _url(self, tee: str, path: str) -> str:
        return f"{self.base_url}/{tee}/certification/v4/{path}"

    def fetch(self, tee: str, fmspc: str, ca: str) -> Collateral:
        """Fetch a fresh bundle (no cache) for a platform: ``tee`` sgx/tdx, FMSPC hex, CA processor/platform."""
        pck = self._require(self._url("sgx", f"pckcrl?ca={ca}&encoding=der"))
        pck_chain = self._header(pck, "SGX-PCK-CRL-Issuer-Chain")
        tcb = self._require(self._url(tee, f"tcb?fmspc={fmspc}"))
        tcb_chain = self._header(tcb, "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
        tcb_text, tcb_sig = signed_member(_text(tcb), "tcbInfo", "TCB info")
        qe = self._require(self._url(tee, "qe/identity?update=standard"))
        qe_chain = self._header(qe, "SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain")
        qe_text, qe_sig = signed_member(_text(qe), "enclaveIdentity", "QE identity")
        served = self._get(self._url("sgx", "rootcacrl"), missing_ok=True)
        if served is not None:
            root_crl = crl_der(served.content, "root CA CRL")
        else:
            # Intel's PCS has no rootcacrl path (404): use the root certificate's CRL distribution point.
            url = root_crl_url(qe_chain)
            root_crl = crl_der(self._require(url).content, f"root CA CRL from {url}")
        return Collateral(
            pck_crl_issuer_chain=pck_chain,
            root_ca_crl=root_crl,
            pck_crl=crl_der(pck.content, "PCK CRL"),
            tcb_info_issuer_chain=tcb_chain,
            tcb_info=tcb_text,
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=qe_chain,
            qe_identity=qe_text,
            qe_identity_signature=qe_sig,
        )

    # -- cache --------------------------------------------------------------------------------------
    def _cache_path(self, tee: str, fmspc: str, ca: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.base_url}\n{tee}\n{fmspc}\n{ca}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{tee}-{fmspc}-{ca}-{key}.json"

    def _read_cache(self, path: Path) -> tuple[Collateral, datetime] | None:
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("format") != CACHE_FORMAT or doc.get("base_url") != self.base_url:
                return None
            collateral = Collateral.from_dict(doc["collateral"])
            _, end = validity_window(collateral)
        except (OSError, ValueError, KeyError, TypeError, RecursionError, FedattestError):
            return None  # missing or unusable: fetch again
        return collateral, end

    def _write_cache(self, path: Path, collateral: Collateral, fetched: datetime) -> None:
        try:
            path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            doc = {
                "format": CACHE_FORMAT,
                "base_url": self.base_url,
                "fetched": fetched.isoformat(),
                "collateral": collateral.to_dict(),
            }
            atomic_write(path, json.dumps(doc, indent=1).encode())
        except OSError as exc:
            raise CollateralError(f"cannot write the PCCS cache {path}: {exc.strerror or exc}") from None

    def fetch_for_quote(self, quote: Quote | bytes, *, at: datetime | None = None) -> Collateral:
        """Collateral for ``quote``'s platform: from the cache while it stays valid past ``at`` (default
        now) plus a margin, otherwise fetched and cached. If a refresh fails but the cached bundle is
        still valid at ``at``, the cached bundle is returned (the verifier checks its windows anyway)."""
        q = quote if isinstance(quote, Quote) else Quote.parse(bytes(quote))
        now = at if at is not None else datetime.now(UTC)
        tee, fmspc, ca = quote_platform(q)
        path = self._cache_path(tee, fmspc, ca)
        cached = self._read_cache(path) if path is not None else None
        if cached is not None and now + REFRESH_MARGIN <= cached[1]:
            return cached[0]
        try:
            collateral = self.fetch(tee, fmspc, ca)
        except CollateralError:
            if cached is not None and now < cached[1]:
                return cached[0]
            raise
        if path is not None:
            self._write_cache(path, collateral, now)
        return collateral


def _text(response: httpx.Response) -> str:
    try:
        return response.content.decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralError(f"{response.request.url}: response body is not UTF-8") from None


__all__ = ["PccsClient", "crl_der", "normalize_base_url", "quote_platform", "signed_member"]
