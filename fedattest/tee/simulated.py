"""A simulated SGX platform: its own PCK infrastructure, collateral and quoting enclave, on disk.

``SimulatedPlatform.create(DIR)`` makes, once, everything a real platform and Intel's PCS would have:
a root CA, a PCK processor CA, the platform's PCK certificate (with a real SGX extension), a TCB
signing certificate, and a quoting enclave (QE) attestation key. Quotes from a
:class:`SimulatedTEE` and the collateral from :meth:`SimulatedPlatform.collateral` are in exactly
Intel's formats, so the same verifier code checks them; only the trust root differs, which is how
verifiers recognise (and by default refuse) simulated evidence.

Layout of DIR (keys 0600, DIR 0700): ``platform.json`` (description), ``root_ca.der``/``root_ca.pem``
(the trust root to give verifiers), ``*.pem`` certificates, ``*.key`` private keys (PKCS#8 PEM),
``sealing.key`` (32-byte sealing secret) and ``collateral.json`` (cached collateral, re-issued before
it expires).

Such a directory is an *authority* (it plays Intel: root CA, PCK CA and TCB signing keys) and one platform
at once. :meth:`SimulatedPlatform.add_host` issues a *host* directory for one more machine, as Intel
provisions a real one: its own PCK key and certificate (signed by the authority's PCK CA), attestation
key and sealing secret, plus only the authority's public material (certificates and pre-signed
collateral). A host cannot sign collateral, so it serves the collateral it was given until it expires.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path
from typing import Annotated, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedattest.dcap.collateral import Collateral, validity_window
from fedattest.errors import FedattestError, TeeError
from fedattest.files import PRIVATE_DIR, atomic_write, readable_by_others
from fedattest.sgx.pck_extension import PckExtension, SgxType
from fedattest.sgx.quote import (
    INTEL_QE_VENDOR_ID,
    AttestationKeyType,
    CertificationData,
    CertificationDataType,
    EcdsaSignatureData,
    QeCertification,
    Quote,
    QuoteHeader,
    ReportBody,
    TeeType,
)
from fedattest.tee import sim_collateral as sc
from fedattest.tee.base import WorkloadIdentity, check_report_data
from fedattest.tee.sim_collateral import Scenario
from fedattest.tee.sim_pki import issue_certificate, issue_crl, name, new_key, pem, raw_public_key, sign_raw

FORMAT: Literal["fedattest-sim-platform"] = "fedattest-sim-platform"
ORGANIZATION = "fedattest simulation (not Intel)"
CRL_BASE = "https://pcs.simulated.fedattest.invalid/sgx/certification/v4"
CA_LIFETIME = timedelta(days=25 * 365)
PCK_LIFETIME = timedelta(days=7 * 365)
COLLATERAL_LIFETIME = timedelta(days=30)
# Collateral is re-issued when it would expire within this margin, so a quote verified a little later
# (another process, a slow network) still finds it valid.
REFRESH_MARGIN = timedelta(days=1)
# Issue times are backdated a little so that a verifier whose clock is slightly behind still accepts.
CLOCK_SKEW = timedelta(minutes=5)

# The authority's keys stay in its own directory; a host directory holds only its platform's keys.
_AUTHORITY_KEYS = ("root_ca", "pck_ca", "tcb_signing")
_HOST_KEYS = ("pck", "attestation")
_KEYS = (*_AUTHORITY_KEYS, *_HOST_KEYS)
_CERTS = ("root_ca", "pck_ca", "pck", "tcb_signing")
Kind = Literal["authority", "host"]

Hex = Annotated[str, Field(pattern=r"^[0-9a-f]*$")]


class PlatformDescription(BaseModel):
    """``platform.json``: what the platform is. Keys and certificates sit next to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["fedattest-sim-platform"]
    version: Literal[1]
    scenario: Scenario
    created: datetime
    ppid: Hex = Field(min_length=32, max_length=32)
    qe_id: Hex = Field(min_length=32, max_length=32)
    qe_auth_data: Hex = Field(min_length=64, max_length=64)
    pck_serial: int = Field(gt=0)
    # "authority": made by ``sim init``, holds the simulated Intel keys; "host": made by ``sim add-host``,
    # holds only its own platform keys. Absent in directories written before hosts existed: authorities.
    kind: Kind = "authority"


@dataclass(frozen=True)
class _Secrets:
    keys: dict[str, ec.EllipticCurvePrivateKey]
    certs: dict[str, x509.Certificate]
    sealing: bytes


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC).replace(microsecond=0)
    if at.tzinfo is None:
        raise TeeError("times must be timezone-aware (UTC)")
    return at.astimezone(UTC).replace(microsecond=0)


def _pck_extension(description: PlatformDescription) -> PckExtension:
    return PckExtension(
        ppid=bytes.fromhex(description.ppid),
        tcb_components=sc.PLATFORM_TCB_COMPONENTS,
        pcesvn=sc.PLATFORM_PCESVN,
        cpusvn=bytes(sc.PLATFORM_TCB_COMPONENTS),
        pceid=sc.PCEID,
        fmspc=sc.FMSPC,
        sgx_type=SgxType.STANDARD,
        platform_instance_id=None,
        configuration=None,
    )


def _issue_pki(description: PlatformDescription) -> _Secrets:
    start = description.created - timedelta(days=1)
    tag = description.ppid[:8]
    keys = {k: new_key() for k in _KEYS}
    root = issue_certificate(
        subject=name(f"Simulated SGX Root CA {tag}", ORGANIZATION),
        public_key=keys["root_ca"].public_key(),
        issuer=None,
        issuer_key=keys["root_ca"],
        not_before=start,
        not_after=start + CA_LIFETIME,
        ca=True,
        crl_url=f"{CRL_BASE}/rootcacrl",
    )
    pck_ca = issue_certificate(
        subject=name(f"Simulated SGX PCK Processor CA {tag}", ORGANIZATION),
        public_key=keys["pck_ca"].public_key(),
        issuer=root,
        issuer_key=keys["root_ca"],
        not_before=start,
        not_after=start + CA_LIFETIME,
        ca=True,
        crl_url=f"{CRL_BASE}/rootcacrl",
    )
    pck = _issue_pck(description, keys["pck"], pck_ca, keys["pck_ca"])
    tcb_signing = issue_certificate(
        subject=name(f"Simulated SGX TCB Signing {tag}", ORGANIZATION),
        public_key=keys["tcb_signing"].public_key(),
        issuer=root,
        issuer_key=keys["root_ca"],
        not_before=start,
        not_after=start + CA_LIFETIME,
        ca=False,
        crl_url=f"{CRL_BASE}/rootcacrl",
    )
    certs = {"root_ca": root, "pck_ca": pck_ca, "pck": pck, "tcb_signing": tcb_signing}
    return _Secrets(keys, certs, secrets.token_bytes(32))


def _issue_pck(
    description: PlatformDescription,
    key: ec.EllipticCurvePrivateKey,
    pck_ca: x509.Certificate,
    pck_ca_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    start = description.created - timedelta(days=1)
    return issue_certificate(
        subject=name("Simulated SGX PCK Certificate", ORGANIZATION),
        public_key=key.public_key(),
        issuer=pck_ca,
        issuer_key=pck_ca_key,
        not_before=start,
        not_after=start + PCK_LIFETIME,
        ca=False,
        crl_url=f"{CRL_BASE}/pckcrl?ca=processor&encoding=der",
        serial=description.pck_serial,
        sgx_extension=_pck_extension(description).to_der(),
    )


def _new_description(scenario: Scenario, created: datetime, kind: Kind) -> PlatformDescription:
    return PlatformDescription(
        format=FORMAT,
        version=1,
        scenario=scenario,
        created=created,
        ppid=secrets.token_hex(16),
        qe_id=secrets.token_hex(16),
        qe_auth_data=secrets.token_hex(32),
        pck_serial=int.from_bytes(secrets.token_bytes(16), "big") >> 1 | 1,
        kind=kind,
    )


def _new_directory(directory: Path, write: Callable[[Path], None]) -> None:
    """Make ``directory`` (absent or empty) appear complete or not at all: ``write`` fills a temporary sibling
    (mode 0700) that is renamed into place at the end."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise TeeError(f"{directory}: already exists and is not an empty directory; choose a new directory")
    parent = directory.parent
    if not parent.is_dir():
        raise TeeError(f"{parent}: no such directory")
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{directory.name}.creating."))
    except OSError as exc:
        raise TeeError(f"cannot create a platform in {parent}: {exc.strerror or exc}") from None
    try:
        os.chmod(staging, PRIVATE_DIR)
        write(staging)
        os.rename(staging, directory)  # atomic; replaces only an empty directory
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise TeeError(f"cannot create {directory}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class SimulatedPlatform:
    """A simulated SGX platform stored in a directory. Make one with :meth:`create`, open it with :meth:`load`."""

    def __init__(self, directory: Path, description: PlatformDescription, material: _Secrets) -> None:
        self.directory = directory
        self.description = description
        self._keys = material.keys
        self._certs = material.certs
        self._sealing = material.sealing
        self._qe: QeCertification | None = None
        self._collateral: tuple[Collateral, datetime, datetime] | None = None

    # -- creating and loading ---------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: Path | str, scenario: Scenario | str = Scenario.UP_TO_DATE, *, now: datetime | None = None
    ) -> SimulatedPlatform:
        """Create a platform in ``directory``, which must not exist or be empty.

        The directory appears complete or not at all: everything is written to a temporary sibling that
        is renamed into place at the end.
        """
        directory = Path(directory)
        try:
            scenario = Scenario(scenario)
        except ValueError:
            choices = ", ".join(s.value for s in Scenario)
            raise TeeError(f"unknown scenario {scenario!r}: choose one of {choices}") from None
        description = _new_description(scenario, _utc(now), "authority")
        material = _issue_pki(description)
        _new_directory(directory, lambda staging: _write_platform(staging, description, material))
        platform = cls(directory, description, material)
        platform.collateral(description.created)
        return platform

    def add_host(self, directory: Path | str, *, now: datetime | None = None) -> SimulatedPlatform:
        """Issue a platform for one more host into ``directory`` (absent or empty), as Intel provisions a real
        machine: its own PPID, QE, PCK key and certificate (signed by this authority's PCK CA), attestation key
        and sealing secret; of the authority, only public certificates and collateral signed now (valid for
        :data:`COLLATERAL_LIFETIME`). Same FMSPC, TCB and scenario, so the one collateral verifies every
        host's quotes. Created atomically, as :meth:`create` does."""
        if not self.is_authority:
            raise TeeError(
                f"{self.directory}: a host platform cannot issue others (it holds no PCK CA key); give the authority"
                " directory made by 'fedattest sim init'"
            )
        directory = Path(directory)
        description = _new_description(self.scenario, _utc(now), "host")
        keys = {k: new_key() for k in _HOST_KEYS}
        pck = _issue_pck(description, keys["pck"], self._certs["pck_ca"], self._keys["pck_ca"])
        certs = {**{c: self._certs[c] for c in ("root_ca", "pck_ca", "tcb_signing")}, "pck": pck}
        material = _Secrets(keys, certs, secrets.token_bytes(32))
        collateral = self.issue_collateral(description.created)

        def write(staging: Path) -> None:
            _write_platform(staging, description, material)
            atomic_write(staging / "collateral.json", collateral.to_json().encode(), mode=0o644)

        _new_directory(directory, write)
        return SimulatedPlatform(directory, description, material)

    @classmethod
    def load(cls, directory: Path | str) -> SimulatedPlatform:
        """Open a platform made by :meth:`create` or :meth:`add_host`. Missing, malformed or world-readable
        files are refused, and so is a host whose PCK certificate was not issued under its root."""
        directory = Path(directory)
        description = _load_description(directory)
        keys = {k: _load_key(directory / f"{k}.key") for k in (_KEYS if description.kind == "authority" else _HOST_KEYS)}
        certs = {c: _load_cert(directory / f"{c}.pem") for c in _CERTS}
        for k in _CERTS:
            if k in keys and certs[k].public_key() != keys[k].public_key():
                raise TeeError(f"{directory / f'{k}.key'}: does not belong to the certificate {k}.pem")
        if description.kind == "host":
            _check_issued(directory, certs)
        sealing_path = directory / "sealing.key"
        sealing = _read_private(sealing_path)
        if len(sealing) != 32:
            raise TeeError(f"{sealing_path}: must hold 32 bytes, holds {len(sealing)}")
        return cls(directory, description, _Secrets(keys, certs, sealing))

    # -- what verifiers need ----------------------------------------------------------------------
    @property
    def is_authority(self) -> bool:
        """True for a directory made by ``sim init`` (it can sign collateral and issue hosts)."""
        return self.description.kind == "authority"

    @property
    def scenario(self) -> Scenario:
        return self.description.scenario

    @property
    def root_ca(self) -> x509.Certificate:
        """The trust root for this platform's evidence (pass it to the verifier instead of Intel's)."""
        return self._certs["root_ca"]

    @property
    def root_ca_der(self) -> bytes:
        return self.root_ca.public_bytes(serialization.Encoding.DER)

    @property
    def pck_certificate(self) -> x509.Certificate:
        return self._certs["pck"]

    @property
    def pck_extension(self) -> PckExtension:
        return _pck_extension(self.description)

    def sealing_secret(self) -> bytes:
        """The platform's 32-byte sealing secret: the root from which sealing keys are derived (as the
        CPU's fused key is for EGETKEY). Never leaves the platform directory otherwise."""
        return self._sealing

    def issue_collateral(self, at: datetime | None = None) -> Collateral:
        """Freshly signed collateral valid from (about) ``at`` for 30 days. Does not touch the cache."""
        if not self.is_authority:
            raise TeeError(f"{self.directory}: a host platform cannot sign collateral; the authority issues it")
        at = _utc(at)
        issue, next_update = at - CLOCK_SKEW, at + COLLATERAL_LIFETIME
        root, pck_ca, tcb = self._certs["root_ca"], self._certs["pck_ca"], self._certs["tcb_signing"]
        revoked = [self.description.pck_serial] if self.scenario is Scenario.REVOKED_PCK else []
        # CRL numbers grow with time, as a real CA's do.
        number = int(issue.timestamp())
        tcb_text = sc.tcb_info_text(self.scenario, issue, next_update)
        qe_text = sc.qe_identity_text(self.scenario, issue, next_update)
        return Collateral(
            pck_crl_issuer_chain=pem(pck_ca, root),
            root_ca_crl=issue_crl(
                issuer=root,
                issuer_key=self._keys["root_ca"],
                revoked_serials=[],
                this_update=issue,
                next_update=next_update,
                number=number,
            ),
            pck_crl=issue_crl(
                issuer=pck_ca,
                issuer_key=self._keys["pck_ca"],
                revoked_serials=revoked,
                this_update=issue,
                next_update=next_update,
                number=number,
            ),
            tcb_info_issuer_chain=pem(tcb, root),
            tcb_info=tcb_text,
            tcb_info_signature=sign_raw(self._keys["tcb_signing"], tcb_text.encode()),
            qe_identity_issuer_chain=pem(tcb, root),
            qe_identity=qe_text,
            qe_identity_signature=sign_raw(self._keys["tcb_signing"], qe_text.encode()),
        )

    def collateral(self, at: datetime | None = None) -> Collateral:
        """Collateral valid at ``at`` (default now) and for at least a day after: the cached
        ``collateral.json`` when it qualifies, otherwise freshly issued and cached (atomically).

        A host platform cannot issue any: it serves the ``collateral.json`` it was given for as long as that is
        valid at ``at`` (no margin: it has nothing fresher), and then fails closed."""
        at = _utc(at)
        if not self.is_authority:
            return self._host_collateral(at)
        if self._collateral is not None:  # in memory: a coordinator asks for it on every activation
            held, start, end = self._collateral
            if start <= at and at + REFRESH_MARGIN <= end:
                return held
        cache = self.directory / "collateral.json"
        try:
            cached = Collateral.from_json(cache.read_bytes())
            start, end = validity_window(cached)
            if start <= at and at + REFRESH_MARGIN <= end:
                self._collateral = (cached, start, end)
                return cached
        except (OSError, FedattestError, ValueError):
            pass  # no cache or an unusable one: issue anew
        fresh = self.issue_collateral(at)
        try:
            atomic_write(cache, fresh.to_json().encode(), mode=0o644)
        except OSError as exc:
            raise TeeError(f"cannot write {cache}: {exc.strerror or exc}") from None
        self._collateral = (fresh, *validity_window(fresh))
        return fresh

    def _host_collateral(self, at: datetime) -> Collateral:
        if self._collateral is not None and self._collateral[1] <= at <= self._collateral[2]:
            return self._collateral[0]
        cache = self.directory / "collateral.json"  # read again: the operator may have put a fresh copy there
        try:
            held = Collateral.from_json(cache.read_bytes())
            start, end = validity_window(held)
        except OSError as exc:
            raise TeeError(f"{cache}: {exc.strerror or exc}; a host platform needs the authority's collateral") from None
        except (FedattestError, ValueError) as exc:
            raise TeeError(f"{cache}: not usable collateral ({exc})") from None
        if not start <= at <= end:
            raise TeeError(
                f"{cache}: collateral expired (valid {start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ}, now"
                f" {at:%Y-%m-%dT%H:%M:%SZ}): re-issue with 'fedattest sim collateral --platform AUTHORITY -o {cache}'"
                " or a new 'fedattest sim add-host'"
            )
        self._collateral = (held, start, end)
        return held

    # -- quoting ---------------------------------------------------------------------------------
    def _qe_certification(self) -> QeCertification:
        """The QE's report over its attestation key, signed by the PCK key: made once per platform, as
        the real QE certifies its key once."""
        if self._qe is None:
            auth = bytes.fromhex(self.description.qe_auth_data)
            ak = raw_public_key(self._keys["attestation"])
            qe_report = ReportBody(
                cpu_svn=bytes(sc.PLATFORM_TCB_COMPONENTS),
                misc_select=sc.QE_MISCSELECT,
                isv_ext_prod_id=bytes(16),
                attributes=sc.QE_ATTRIBUTES,
                mr_enclave=sc.QE_MRENCLAVE,
                mr_signer=sc.QE_MRSIGNER,
                config_id=bytes(64),
                isv_prod_id=sc.QE_ISV_PROD_ID,
                isv_svn=sc.QE_ISV_SVN,
                config_svn=0,
                isv_family_id=bytes(16),
                report_data=sha256(ak + auth).digest() + bytes(32),
            )
            chain = pem(self._certs["pck"], self._certs["pck_ca"], self._certs["root_ca"]).encode()
            self._qe = QeCertification(
                qe_report=qe_report,
                qe_report_signature=sign_raw(self._keys["pck"], qe_report.to_bytes()),
                qe_auth_data=auth,
                certification_data=CertificationData(CertificationDataType.PCK_CERT_CHAIN, chain + b"\x00"),
            )
        return self._qe

    def quote(self, identity: WorkloadIdentity, report_data: bytes) -> bytes:
        """A DCAP quote v3 for an enclave with ``identity`` binding the 64 bytes ``report_data``."""
        report_data = check_report_data(report_data)
        header = QuoteHeader(
            version=3,
            attestation_key_type=AttestationKeyType.ECDSA_P256,
            tee_type=TeeType.SGX,
            qe_svn=sc.QE_ISV_SVN,
            pce_svn=sc.PLATFORM_PCESVN,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=bytes.fromhex(self.description.qe_id) + bytes(4),
        )
        body = ReportBody(
            cpu_svn=bytes(sc.PLATFORM_TCB_COMPONENTS),
            misc_select=identity.misc_select,
            isv_ext_prod_id=identity.isv_ext_prod_id,
            attributes=identity.attributes,
            mr_enclave=identity.mr_enclave,
            mr_signer=identity.mr_signer,
            config_id=identity.config_id,
            isv_prod_id=identity.isv_prod_id,
            isv_svn=identity.isv_svn,
            config_svn=identity.config_svn,
            isv_family_id=identity.isv_family_id,
            report_data=report_data,
        )
        unsigned = Quote(header, body, EcdsaSignatureData(bytes(64), bytes(64), self._qe_certification()))
        signature = sign_raw(self._keys["attestation"], unsigned.signed_bytes())
        ak = raw_public_key(self._keys["attestation"])
        return Quote(header, body, EcdsaSignatureData(signature, ak, self._qe_certification())).to_bytes()

    def tee(self, identity: WorkloadIdentity) -> SimulatedTEE:
        return SimulatedTEE(self, identity)


class SimulatedTEE:
    """An enclave with a given identity on a simulated platform (implements :class:`fedattest.tee.TEE`)."""

    kind = "sgx-simulated"
    simulated = True

    def __init__(self, platform: SimulatedPlatform, identity: WorkloadIdentity) -> None:
        self.platform = platform
        self.identity = identity

    def sealing_key(self) -> bytes:
        from fedattest.tee.sealing import derive_sealing_key  # noqa: PLC0415 - only enclaves that seal need it

        return derive_sealing_key(self.platform.sealing_secret(), b"mrenclave:" + self.identity.mr_enclave)

    def quote(self, report_data: bytes) -> bytes:
        return self.platform.quote(self.identity, report_data)


def _write_platform(directory: Path, description: PlatformDescription, material: _Secrets) -> None:
    # An authority's description is written as before hosts existed, so older fedattest still opens it; a host's
    # carries "kind", which older fedattest refuses (it would look for the authority keys a host lacks).
    described = description.model_dump_json(indent=2, exclude={"kind"} if description.kind == "authority" else None)
    atomic_write(directory / "platform.json", (described + "\n").encode(), mode=0o644)
    for k, key in material.keys.items():
        atomic_write(directory / f"{k}.key", _key_pem(key))
    for c, cert in material.certs.items():
        atomic_write(directory / f"{c}.pem", cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    root = material.certs["root_ca"]
    atomic_write(directory / "root_ca.der", root.public_bytes(serialization.Encoding.DER), mode=0o644)
    atomic_write(directory / "sealing.key", material.sealing)


def _load_description(directory: Path) -> PlatformDescription:
    described = directory / "platform.json"
    if not described.is_file():
        raise TeeError(f"{directory}: not a simulated platform (no platform.json); create one with 'fedattest sim init'")
    try:
        return PlatformDescription.model_validate_json(described.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise TeeError(f"{described}: {where}: {first['msg']}") from None
    except OSError as exc:
        raise TeeError(f"{described}: {exc.strerror or exc}") from None


def trust_root(directory: Path | str) -> x509.Certificate:
    """A platform directory's root CA, read from its public files only (``platform.json``, ``root_ca.pem``): what an
    auditor needs, who is given no platform's private keys."""
    directory = Path(directory)
    _load_description(directory)
    return _load_cert(directory / "root_ca.pem")


def _check_issued(directory: Path, certs: dict[str, x509.Certificate]) -> None:
    """A host's PCK certificate must chain to its root: files copied in from another authority are refused
    here, with the file to blame, rather than as a chain failure at some verifier later."""
    for child, parent in (("pck", "pck_ca"), ("pck_ca", "root_ca"), ("tcb_signing", "root_ca")):
        try:
            certs[child].verify_directly_issued_by(certs[parent])
        except (ValueError, TypeError, InvalidSignature):
            raise TeeError(
                f"{directory / f'{child}.pem'}: not issued by {parent}.pem; the host directory mixes authorities"
            ) from None


def _read_private(path: Path) -> bytes:
    try:
        if readable_by_others(path):
            raise TeeError(f"{path}: private key file is accessible by other users; run 'chmod 600 {path}'")
        return path.read_bytes()
    except FileNotFoundError:
        raise TeeError(f"{path}: missing; the platform directory is incomplete") from None
    except OSError as exc:
        raise TeeError(f"{path}: {exc.strerror or exc}") from None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = _read_private(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TeeError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TeeError(f"{path}: not a P-256 private key")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise TeeError(f"{path}: missing; the platform directory is incomplete") from None
    except OSError as exc:
        raise TeeError(f"{path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TeeError(f"{path}: not a PEM certificate") from None


def describe(platform: SimulatedPlatform) -> dict[str, object]:
    """A JSON-able summary for ``fedattest sim`` output."""
    ext = platform.pck_extension
    return {
        "directory": str(platform.directory),
        "scenario": platform.scenario.value,
        "scenario_description": platform.scenario.description,
        "kind": platform.description.kind,
        "created": platform.description.created.isoformat(),
        "root_ca": str(platform.directory / "root_ca.der"),
        "root_ca_sha256": sha256(platform.root_ca_der).hexdigest(),
        "fmspc": ext.fmspc.hex(),
        "pceid": ext.pceid.hex(),
        "tcb_components": list(ext.tcb_components),
        "pcesvn": ext.pcesvn,
        "qe_isvsvn": sc.QE_ISV_SVN,
    }
