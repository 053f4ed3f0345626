"""Collateral from a PCCS or Intel's PCS (API v4), with an on-disk cache.

For a quote, :meth:`PccsClient.fetch_for_quote` reads the FMSPC and the PCK CA (processor or platform,
from the issuer of the PCK certificate, as dcap-qvl does) from the PCK certificate chain in the quote
and fetches, relative to the base URL:

- ``sgx/certification/v4/pckcrl?ca=processor|platform&encoding=der``: the PCK CRL (for TDX too);
  header ``SGX-PCK-CRL-Issuer-Chain``;
- ``{sgx|tdx}/certification/v4/tcb?fmspc=HEX``: ``{"tcbInfo": {...}, "signature": "hex"}``; header
  ``TCB-Info-Issuer-Chain`` (``SGX-TCB-Info-Issuer-Chain`` on older services);
- ``{sgx|tdx}/certification/v4/qe/identity?update=standard``: ``{"enclaveIdentity": {...},
  "signature": "hex"}``; header ``SGX-Enclave-Identity-Issuer-Chain``;
- ``sgx/certification/v4/rootcacrl``: the root CA CRL. This is a PCCS path (it answers with the hex of
  the DER CRL). Intel's PCS has no such path: when it answers 404, the CRL is fetched from the CRL
  distribution point (an ``https://`` URL) of the root certificate in the QE identity issuer chain.

Issuer-chain headers are URL-encoded PEM. CRL bodies may be DER, PEM or hex of DER; all become DER,
as :class:`~fedattest.dcap.collateral.Collateral` stores them. TCB info and QE identity are signed over
their exact bytes, so their text is sliced out of the response body, never re-serialised.

Nothing fetched is trusted: the verifier checks every signature and CRL up to its trust root. The
cache only saves round trips. It holds one file per response (keyed by the full URL, so by base URL
and path with query): the body, the issuer chain header and the fetch time, written atomically, mode
0600 in a 0700 directory. An entry is served without contacting the service until shortly
(:data:`REFRESH_MARGIN`) before its own ``nextUpdate`` (of the TCB info, the QE identity or the CRL);
then it is fetched again. If that refresh fails, the cached entry is used only while it has not
expired; after ``nextUpdate`` a failed refresh is an error (fail closed), never stale collateral.

Layout: pure functions (URLs, parsing, cache documents) first; HTTP and files only in
:class:`PccsClient`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from fedattest.dcap.chain import load_pem_chain
from fedattest.dcap.collateral import Collateral
from fedattest.errors import CollateralError, FedattestError
from fedattest.files import PRIVATE_DIR, atomic_write
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension
from fedattest.sgx.quote import Quote, TeeType

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# Refresh a cached entry this long before its nextUpdate, so that a verification a little later still
# finds the collateral valid. Intel re-issues TCB info, QE identity and CRLs well before nextUpdate.
REFRESH_MARGIN = timedelta(hours=1)
CACHE_FORMAT = "fedattest-pccs-entry-v1"
API = "certification/v4"

PCK_CRL_CHAIN = "SGX-PCK-CRL-Issuer-Chain"
TCB_INFO_CHAIN = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN = ("SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain")


# -- what to fetch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """What collateral depends on: ``tee`` (``sgx``/``tdx``), FMSPC (upper-case hex) and the PCK CA
    (``processor``/``platform``)."""

    tee: str
    fmspc: str
    ca: str


class Kind(Enum):
    """How a response body is read."""

    CRL = "CRL"
    TCB_INFO = "tcbInfo"
    QE_IDENTITY = "enclaveIdentity"


@dataclass(frozen=True)
class Resource:
    """One thing to GET: ``target`` is a path with query relative to the base URL, or an absolute URL
    (a CRL distribution point); ``chain_headers`` are the accepted names of its issuer-chain header
    (current name first), empty when it has none."""

    target: str
    what: str
    kind: Kind
    chain_headers: tuple[str, ...] = ()


def normalize_base_url(url: str) -> str:
    """``https://host:8081/`` or ``https://host:8081/sgx/certification/v4`` → ``https://host:8081``."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise CollateralError(f"PCCS URL must be http(s)://host[:port][/path], got {url!r}")
    if parsed.query or parsed.fragment:
        raise CollateralError(f"PCCS URL must not have a query or fragment: {url!r}")
    path = parsed.path.rstrip("/")
    for suffix in (f"/sgx/{API}", f"/tdx/{API}"):
        path = path.removesuffix(suffix)
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


def pck_ca_type(leaf: x509.Certificate) -> str:
    """``processor`` or ``platform``: which PCK CA issued ``leaf``, by the issuer's common name ("Intel
    SGX PCK Processor CA" / "Intel SGX PCK Platform CA"). Like dcap-qvl, an issuer that names neither
    is taken to be the processor CA."""
    names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    return "platform" if "Platform CA" in common_name else "processor"


def quote_platform(quote: Quote) -> Platform:
    """The platform a quote comes from, read from the PCK certificate in its certification data."""
    try:
        leaf = load_pem_chain(quote.pck_chain_pem, "PCK certificate chain", "pck_chain")[0]
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
        if not isinstance(ext, x509.UnrecognizedExtension):
            raise CollateralError("the SGX extension is not in the expected form")
        fmspc = PckExtension.parse(ext.value).fmspc
        ca = pck_ca_type(leaf)
    except (ValueError, IndexError, x509.InvalidVersion, x509.ExtensionNotFound, FedattestError) as exc:
        raise CollateralError(f"cannot read the FMSPC from the quote's PCK certificate: {exc}") from None
    tee = "tdx" if quote.header.tee_type == TeeType.TDX else "sgx"
    return Platform(tee, fmspc.hex().upper(), ca)


def resources(platform: Platform) -> tuple[Resource, Resource, Resource, Resource]:
    """PCK CRL, TCB info, QE identity and root CA CRL (PCCS path) for ``platform``."""
    tee = platform.tee
    return (
        Resource(f"sgx/{API}/pckcrl?ca={platform.ca}&encoding=der", "PCK CRL", Kind.CRL, (PCK_CRL_CHAIN,)),
        Resource(f"{tee}/{API}/tcb?fmspc={platform.fmspc}", "TCB info", Kind.TCB_INFO, TCB_INFO_CHAIN),
        Resource(f"{tee}/{API}/qe/identity?update=standard", "QE identity", Kind.QE_IDENTITY, QE_IDENTITY_CHAIN),
        Resource(f"sgx/{API}/rootcacrl", "root CA CRL", Kind.CRL),
    )


def root_crl_url(issuer_chain_pem: str) -> str:
    """The ``https://`` CRL distribution point of the last (root) certificate of an issuer chain."""
    try:
        root = load_pem_chain(issuer_chain_pem, "QE identity issuer chain", "qe_identity_chain")[-1]
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (IndexError, x509.ExtensionNotFound, FedattestError):
        raise CollateralError("the root CA certificate of the QE identity issuer chain names no CRL distribution point") from None
    urls = [
        str(general_name.value)
        for point in points
        for general_name in point.full_name or []
        if isinstance(general_name, x509.UniformResourceIdentifier)
    ]
    for url in urls:
        if url.startswith("https://"):
            return url
    raise CollateralError(f"the root CA certificate names no https:// CRL distribution point (it names {urls or 'none'})")


# -- reading responses (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """The signed member of a TCB info or QE identity response."""

    text: str  # the exact text of the inner object: the signed bytes
    signature: bytes
    next_update: datetime


@dataclass(frozen=True)
class Entry:
    """A response as the client uses and caches it: the body, the issuer chain (decoded header, None
    for resources without one) and when it was fetched."""

    body: bytes
    chain: str | None
    fetched: datetime


def signed_member(body: str, key: str, what: str) -> Signed:
    """From ``{"<key>": {...}, "signature": "hex"}`` (members in any order, any whitespace): the exact
    text of the ``key`` member's value, the decoded signature and the value's ``nextUpdate``."""
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
                if body[i : i + 1] == "}":
                    raise ValueError(f"trailing ',' at offset {i}")
            elif body[i : i + 1] != "}":
                raise ValueError(f"expected ',' or '}}' at offset {i}")
        if body[_skip_ws(body, i + 1) :]:
            raise ValueError("data after the JSON object")
    except (ValueError, IndexError, RecursionError) as exc:
        raise CollateralError(f"{what} response is not valid JSON: {exc}") from None
    inner = values.get(key)
    if not isinstance(inner, dict) or not isinstance(values.get("signature"), str):
        raise CollateralError(f"{what} response must be an object with {key!r} (an object) and 'signature' (a hex string)")
    try:
        signature = bytes.fromhex(values["signature"])
    except ValueError:
        raise CollateralError(f"{what} signature is not hex") from None
    start, end = spans[key]
    return Signed(body[start:end], signature, _json_time(inner.get("nextUpdate"), f"{what} nextUpdate"))


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _json_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise CollateralError(f"{what} is missing or not a string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CollateralError(f"{what} {value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise CollateralError(f"{what} {value!r} has no time zone")
    return when.astimezone(UTC)


def crl_der(body: bytes, what: str) -> bytes:
    """A CRL as served, DER, PEM or hex of DER (a PCCS's root CA CRL), as DER; it must parse."""
    if body[:1] == b"\x30":  # DER: a SEQUENCE (hex starts with the digit "3", 0x33; PEM with "-")
        der = body
    else:
        stripped = body.strip()
        if stripped.startswith(b"-----BEGIN"):
            try:
                return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
            except (ValueError, x509.InvalidVersion):
                raise CollateralError(f"{what} is not a valid PEM CRL") from None
        try:
            der = binascii.unhexlify(stripped)
        except (binascii.Error, ValueError):
            raise CollateralError(f"{what} is neither DER, PEM nor hex") from None
    crl_next_update(der, what)
    return der


def crl_next_update(der: bytes, what: str) -> datetime:
    """The nextUpdate of a DER CRL (its thisUpdate when it has none: such a CRL is never fresh)."""
    try:
        crl = x509.load_der_x509_crl(der)
        return crl.next_update_utc or crl.last_update_utc
    except (ValueError, x509.InvalidVersion):
        raise CollateralError(f"{what} is not a valid DER CRL") from None


def decode_chain(value: str, what: str) -> str:
    """An issuer-chain header (URL-encoded PEM) as PEM text; it must hold at least one certificate."""
    try:
        chain = urllib.parse.unquote(value, errors="strict")
        x509.load_pem_x509_certificates(chain.encode())
    except (ValueError, x509.InvalidVersion, UnicodeError):
        raise CollateralError(f"{what} is not a URL-encoded PEM certificate chain") from None
    return chain


def next_update(kind: Kind, body: bytes, what: str) -> datetime:
    """Check that ``body`` reads as ``kind`` and return when it must be fetched again."""
    if kind is Kind.CRL:
        return crl_next_update(crl_der(body, what), what)
    return signed_member(_utf8(body, what), kind.value, what).next_update


def _utf8(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralError(f"{what} response body is not UTF-8") from None


def assemble(pck: Entry, tcb: Entry, qe: Entry, root: Entry) -> Collateral:
    """The collateral from its four responses (each already checked by :func:`next_update`)."""
    tcb_info = signed_member(_utf8(tcb.body, "TCB info"), Kind.TCB_INFO.value, "TCB info")
    qe_identity = signed_member(_utf8(qe.body, "QE identity"), Kind.QE_IDENTITY.value, "QE identity")
    assert pck.chain is not None and tcb.chain is not None and qe.chain is not None
    return Collateral(
        pck_crl_issuer_chain=pck.chain,
        root_ca_crl=crl_der(root.body, "root CA CRL"),
        pck_crl=crl_der(pck.body, "PCK CRL"),
        tcb_info_issuer_chain=tcb.chain,
        tcb_info=tcb_info.text,
        tcb_info_signature=tcb_info.signature,
        qe_identity_issuer_chain=qe.chain,
        qe_identity=qe_identity.text,
        qe_identity_signature=qe_identity.signature,
    )


# -- cache documents (pure) ------------------------------------------------------------------------


def cache_name(url: str) -> str:
    """The cache file name for ``url``: a hash of the full URL (base URL, path and query)."""
    return hashlib.sha256(url.encode()).hexdigest() + ".json"


def cache_document(url: str, entry: Entry, expires: datetime) -> bytes:
    doc = {
        "format": CACHE_FORMAT,
        "url": url,
        "fetched": entry.fetched.isoformat(),
        "next_update": expires.isoformat(),  # for people; recomputed from the body when read
        "chain": entry.chain,
        "body": base64.b64encode(entry.body).decode("ascii"),
    }
    return json.dumps(doc, indent=1).encode()


def read_cache_document(data: bytes, url: str, resource: Resource) -> tuple[Entry, datetime] | None:
    """The entry in a cache file and its nextUpdate; None when the file is not a usable entry for ``url``."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("url") != url:
            return None
        chain = doc["chain"]
        if (chain is None) != (not resource.chain_headers) or not isinstance(chain, str | None):
            return None
        body = base64.b64decode(doc["body"], validate=True)
        fetched = datetime.fromisoformat(doc["fetched"])
        expires = next_update(resource.kind, body, resource.what)
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error, CollateralError):
        return None
    return Entry(body, chain, fetched), expires


# -- the client ------------------------------------------------------------------------------------


class PccsClient:
    """Fetches collateral from a PCCS/PCS (API v4) at ``base_url``, cached in ``cache_dir`` (None: no cache).

    ``verify`` is the TLS verification for the service: True (the system's CAs) or a path to a PEM CA
    bundle (e.g. a local PCCS's self-signed certificate). Turning verification off is refused.
    Every failure raises :class:`CollateralError` naming the URL and what went wrong.
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
        self.timeout = timeout
        self._http = httpx.Client(verify=tls, timeout=timeout, follow_redirects=True, headers={"Accept": "*/*"})
        self.requests = 0  # HTTP requests made (for tests and logs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PccsClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- the API --------------------------------------------------------------------------------------
    def fetch_for_quote(self, quote: Quote | bytes, *, at: datetime | None = None) -> Collateral:
        """Collateral for ``quote``'s platform. Cached responses are used while ``at`` (default: now) is
        more than :data:`REFRESH_MARGIN` before their nextUpdate; others are fetched (and cached)."""
        q = quote if isinstance(quote, Quote) else Quote.parse(bytes(quote))
        return self.fetch_for_platform(quote_platform(q), at=at)

    def fetch_for_platform(self, platform: Platform, *, at: datetime | None = None) -> Collateral:
        """Collateral for a platform given by TEE, FMSPC and PCK CA (see :meth:`fetch_for_quote`)."""
        now = at if at is not None else datetime.now(UTC)
        pck_crl, tcb_info, qe_identity, root_crl = resources(platform)
        pck = self._entry(pck_crl, now)
        tcb = self._entry(tcb_info, now)
        qe = self._entry(qe_identity, now)
        root = self._lookup(root_crl, now, missing_ok=True)
        if root is None:  # Intel's PCS: the root CA CRL is at the root certificate's distribution point
            assert qe.chain is not None
            root = self._entry(Resource(root_crl_url(qe.chain), "root CA CRL", Kind.CRL), now)
        return assemble(pck, tcb, qe, root)

    # -- cache and HTTP -------------------------------------------------------------------------------
    def _url(self, target: str) -> str:
        return target if target.startswith("https://") else f"{self.base_url}/{target}"

    def _entry(self, resource: Resource, now: datetime) -> Entry:
        entry = self._lookup(resource, now, missing_ok=False)
        assert entry is not None  # only missing_ok returns None
        return entry

    def _lookup(self, resource: Resource, now: datetime, *, missing_ok: bool) -> Entry | None:
        """The response for ``resource``: cached while fresh, otherwise fetched and cached."""
        url = self._url(resource.target)
        path = self.cache_dir / cache_name(url) if self.cache_dir is not None else None
        cached = self._read_cache(path, url, resource) if path is not None else None
        if cached is not None and now + REFRESH_MARGIN < cached[1]:
            return cached[0]
        try:
            fetched = self._download(url, resource, missing_ok=missing_ok)
        except CollateralError:
            if cached is not None and now < cached[1]:
                return cached[0]  # the refresh failed, but the cached response has not expired yet
            raise
        if fetched is None:
            return None
        entry, expires = fetched
        if path is not None:
            self._write_cache(path, cache_document(url, entry, expires))
        return entry

    def _download(self, url: str, resource: Resource, *, missing_ok: bool) -> tuple[Entry, datetime] | None:
        """GET ``url`` and check the response: the entry and its nextUpdate; None on 404 if ``missing_ok``."""
        self.requests += 1
        fetched = datetime.now(UTC)
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code == 404 and missing_ok:
                    return None
                if response.status_code != 200:
                    raise CollateralError(f"{url}: HTTP {response.status_code} {response.reason_phrase}".rstrip())
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise CollateralError(f"{url}: response larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB")
                headers = response.headers
        except httpx.TimeoutException:
            raise CollateralError(f"{url}: no response within {self.timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if "CERTIFICATE_VERIFY_FAILED" in detail:
                detail += " (for a PCCS with a self-signed certificate, trust it with a CA bundle: CLI --pccs-ca)"
            raise CollateralError(f"{url}: {detail}") from None
        chain: str | None = None
        if resource.chain_headers:
            value = next((headers[n] for n in resource.chain_headers if headers.get(n)), None)
            if value is None:
                raise CollateralError(f"{url}: the response has no {resource.chain_headers[0]} header")
            chain = decode_chain(value, f"{url}: the {resource.chain_headers[0]} header")
        try:
            expires = next_update(resource.kind, bytes(body), resource.what)
        except CollateralError as exc:
            raise CollateralError(f"{url}: {exc}") from None
        return Entry(bytes(body), chain, fetched), expires

    def _read_cache(self, path: Path, url: str, resource: Resource) -> tuple[Entry, datetime] | None:
        try:
            if path.stat().st_size > 2 * MAX_RESPONSE_BYTES:
                return None
            data = path.read_bytes()
        except OSError:
            return None  # missing or unreadable: fetch again
        return read_cache_document(data, url, resource)

    def _write_cache(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            atomic_write(path, data)
        except OSError as exc:
            raise CollateralError(f"cannot write the PCCS cache {path}: {exc.strerror or exc}") from None


__all__ = [
    "Kind",
    "PccsClient",
    "Platform",
    "Resource",
    "crl_der",
    "decode_chain",
    "normalize_base_url",
    "quote_platform",
    "resources",
    "signed_member",
]
