"""The coordinator's logic, without HTTP: state, policy, nonces, activation, tokens, audit.

Runs inside an enclave (simulated or Gramine). On first start it generates its root CA key, its token
key and a master secret *inside* the enclave and seals them with the enclave's sealing key; a restart
unseals them, and a different measurement cannot. Every accept/reject carries a reason; every
activation is one store transaction (nonce, activation record and audit entry together).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedattest.attestation import REPORT_DATA, Attestation, attest
from fedattest.canonical import canonical_json
from fedattest.coordinator.activation import (
    ActivationError,
    check_alive,
    check_reprovision,
    check_request,
    check_same_keys,
    claims_nonce,
)
from fedattest.coordinator.audit import SignedHead, export_log, format_time, parse_time, sign_head
from fedattest.coordinator.events import event
from fedattest.coordinator.overview import AuditFold, overview
from fedattest.coordinator.revocation import revocation_reason
from fedattest.coordinator.round_report import metrics_problem, nodes_problem
from fedattest.coordinator.state_dir import SealedState, StateDirectory
from fedattest.coordinator.store import (
    ActivationRecord,
    RevocationRecord,
    Store,
    StoreError,
    StoreUnavailableError,
)
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.pki import identity as ident
from fedattest.pki.crl import RevokedCertificate, build_crl
from fedattest.pki.names import MEMBER_URI
from fedattest.pki.signing import UpdateRejectedError, UpdateVerifier
from fedattest.policy.appraisal import AnyCode
from fedattest.policy.approval import Approval, ApprovalCheck, check_approvals
from fedattest.policy.federation import FederationPolicy, Member, parse_policy
from fedattest.policy.ledger import Release, charge, training_round
from fedattest.sgx.quote import Quote
from fedattest.tee.base import TEE

NONCE_TTL_SECONDS = 300.0
MAX_QUOTE_BYTES = 64 * 1024
# Issued nonces are not stored: each is ``random (12) || issue time (4, big-endian seconds) || MAC (16)``,
# the MAC an HMAC-SHA256 under a key that exists only in this process's memory (a restart invalidates every
# outstanding nonce, which is as safe as forgetting them was). Only *redeemed* nonces are remembered, until
# they expire, so the table grows with real activations, never with unauthenticated POST /nonce.
_NONCE_MAC = b"fedattest-nonce-v1"
MAX_REDEEMED_NONCES = 100_000
# A member's identity counts as *running* for this long after its last heartbeat (POST /api/v1/alive, which the
# launchers send every 5 to 6 s): about three heartbeats, so one lost on a busy network does not make it look stopped.
# A fresh activation of a member with a running identity is refused (409): a second launcher would otherwise
# replace the first one's node key and evict it. An operator-error guard, kept in memory only (see security.md).
LIVE_SECONDS = 20.0
# A heartbeat's time may be this far from the coordinator's clock (the hosts' clocks differ a little): it bounds
# how long a recorded heartbeat could be replayed (over TLS, and only to keep an identity looking alive).
ALIVE_SKEW_SECONDS = 30.0


@dataclass(frozen=True)
class _Seen:
    """The last heartbeat of one identity: what a refused duplicate activation is told about it."""

    serial: int
    activated: str  # when the identity was activated (its activation record's time)
    expires: float  # its certificate's notAfter (clock seconds): an expired identity is not running as the member
    at: float  # the coordinator's monotonic time of the heartbeat


def _check_update_approvals(current: FederationPolicy, new: FederationPolicy, approvals: list[Approval]) -> ApprovalCheck:
    """:class:`ActivationError` (403) unless ``approvals`` approve ``new`` enough both by ``current``'s
    approvers (so nobody takes over by rewriting the approver list) and by ``new``'s; else the latter check.
    The one check for replacing a policy: ``POST /api/v1/policy`` and a different policy given at start-up."""
    by_current = check_approvals(current, approvals, digest=new.policy_hash())
    by_new = check_approvals(new, approvals)
    for who, check in (("the current policy's approvers", by_current), ("the new policy's approvers", by_new)):
        if not check.enough:
            raise ActivationError(f"not approved by {who}: {check.reason}", 403)
    return by_new


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: base64url SHA-256 of the required members, sorted, no whitespace (for these string
    members, exactly their RFC 8785 form)."""
    required = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(canonical_json(required)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Coordinator:
    """One federation's coordinator, without HTTP and without files: it is handed its TEE (its own quote),
    its verifier and collateral source, its store, a way to unseal its state (called once, with the
    federation's name, after the policy is known) and its clock. :func:`open_coordinator` opens a state
    directory and hands over what it holds. Thread-safe: the store's transactions, a lock held while a policy
    takes force (and around each activation's commit), and a lock for the metrics."""

    tee: TEE
    verifier: QuoteVerifier
    collateral_for: Callable[[Quote], Collateral]
    store: Store
    unseal_state: Callable[[str], SealedState]
    policy_text: str | None = None
    approvals: list[str] = field(default_factory=list)
    cert_lifetime: timedelta = timedelta(days=1)
    clock: Callable[[], float] = time.time
    accepted_store: dict[str, Any] | None = None  # what --accept-store overrode: recorded in the audit log
    on_close: Callable[[], None] | None = None  # releases what was opened for it (the state directory's lock)
    live_seconds: float = LIVE_SECONDS  # see LIVE_SECONDS; 0 turns the duplicate-member guard off
    monotonic: Callable[[], float] = time.monotonic  # liveness is measured on it: wall-clock steps cannot revive one

    def __post_init__(self) -> None:
        if self.accepted_store is not None:  # --accept-store: the override is part of the history
            with self.store.transaction() as tx:
                tx.append_audit(self._now(), "store-accepted", self.accepted_store)
        # Held while a policy takes force (with its revocations) and around each activation's commit, so no
        # identity is issued under a policy after it was replaced.
        self._policy_lock = threading.Lock()
        self._revoked = {r.cert_sha256: r for r in self.store.revocations()}
        # The privacy ledger: every release reserved so far (the audit log's reservation entries), by (run, round).
        self._reserved: dict[tuple[str, int], tuple[Release, int]] = {
            (str(e.data["run_id"]), int(e.data["round"])): (Release.from_json(e.data["release"]), e.seq)
            for e in self.store.audit_entries() if e.kind == "reservation"
        }  # fmt: skip
        self._ledger_lock = threading.Lock()  # a charge is checked and recorded as one step: two runs race for the last ε
        self._crl: tuple[tuple[int, int], bytes] | None = None  # ((revocations, minute), DER)
        self.policy = self._load_policy()
        self.state = self.unseal_state(self.policy.name)
        self.metrics: dict[str, int] = {
            "activations_accepted": 0, "activations_refused": 0, "reprovisions_accepted": 0, "reprovisions_refused": 0,
            "quotes_served": 0, "heartbeats_accepted": 0, "heartbeats_refused": 0,
        }  # fmt: skip
        self.phase_seconds: dict[str, float] = {"verify": 0.0, "issue": 0.0, "store": 0.0}
        self._metrics_lock = threading.Lock()  # the API counts from several worker threads at once
        self._nonce_key = secrets.token_bytes(32)
        self._redeemed: dict[bytes, float] = {}  # redeemed nonce -> when it expires
        self._nonce_lock = threading.Lock()
        self._collateral_docs: dict[int, tuple[Collateral, str, str]] = {}
        # member -> certificate SHA-256 -> its last heartbeat. In memory only: liveness is not a decision for the
        # audit log, and after a restart no member is running until its next heartbeat (within 5 s).
        self._seen: dict[str, dict[str, _Seen]] = {}
        self._seen_lock = threading.Lock()
        self._alive_refused: dict[str, str] = {}  # member -> its last refused heartbeat's reason (logged once)
        # The audit log as the overview shows it, folded as it grows: each GET reads only the entries appended since.
        self._folded = AuditFold()
        self._overview_lock = threading.Lock()
        signer = ident.issue_token_signer(ca_key=self.state.root_key, ca=self.state.root_ca,
                                          public_key=self.state.token_key.public_key(), federation=self.policy.name,
                                          now=self._utc())  # fmt: skip
        self._x5c = [base64.b64encode(signer.public_bytes(serialization.Encoding.DER)).decode()]  # RFC 7515: base64 DER
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.state.token_key.public_key()))
        self.jwk = {**jwk, "use": "sig", "alg": "ES256", "kid": jwk_thumbprint(jwk)}

    # -- policy ---------------------------------------------------------------------------------------
    def _load_policy(self) -> FederationPolicy:
        stored = self.store.latest_policy()
        if self.policy_text is None:
            if stored is None:
                raise FedattestError("no policy: start the coordinator with --policy FILE and its --approval files")
            return parse_policy(stored[1])
        policy = parse_policy(self.policy_text)
        parsed = [Approval.from_json(a) for a in self.approvals]
        check = check_approvals(policy, parsed)
        if not check.enough:
            raise FedattestError(f"policy {policy.name!r} is not approved: {check.reason}")
        if stored is not None and parse_policy(stored[1]).policy_hash() == policy.policy_hash():
            return policy
        if stored is not None and parse_policy(stored[1]).name != policy.name:
            raise FedattestError(f"this state belongs to federation {parse_policy(stored[1]).name!r}, not {policy.name!r}")
        older = next((v for v in self.store.policy_versions() if v.policy_hash == policy.policy_hash().hex()), None)
        if stored is not None and older is not None:  # e.g. restarted with the file from before a POST /policy
            raise FedattestError(
                f"the --policy file is version {older.version} of {policy.name!r}, replaced by version {stored[0]}, which"
                " is in force: start with the policy in force, or without --policy (going back needs a new version)"
            )
        if stored is not None:  # replacing the policy in force: the approvals POST /api/v1/policy needs
            try:
                _check_update_approvals(parse_policy(stored[1]), policy, parsed)
            except ActivationError as exc:
                raise FedattestError(f"policy {policy.name!r} would replace the policy in force: {exc}") from None
        self._install_policy(policy, self.policy_text, self.approvals, list(check.valid))
        return policy

    def update_policy(self, text: str, approvals: list[str]) -> dict[str, Any]:
        """Replace the policy with a new version. It needs enough valid approvals of the new version both
        from the current policy's approvers (so nobody takes over by rewriting the approver list) and
        from its own. Every version stays in the store and the audit log."""
        try:
            new = parse_policy(text)
            parsed = [Approval.from_json(a) for a in approvals]
        except FedattestError as exc:
            raise ActivationError(str(exc), 400) from None
        if new.name != self.policy.name:
            raise ActivationError(f"this coordinator serves federation {self.policy.name!r}, not {new.name!r}", 400)
        if new.policy_hash() == self.policy.policy_hash():
            raise ActivationError("this policy version is already in force", 409)
        by_new = _check_update_approvals(self.policy, new, parsed)
        version, revoked = self._install_policy(new, text, approvals, list(by_new.valid))
        event("policy", outcome="in-force", name=new.name, version=version, hash=new.policy_hash().hex()[:16],
              revoked=len(revoked))  # fmt: skip
        for r in revoked:
            event("revocation", member=r["member"], cert=str(r["cert_sha256"])[:16], reason=r["reason"])
        return {"version": version, "policy_hash": new.policy_hash().hex(), "revoked": revoked}

    def _install_policy(
        self, new: FederationPolicy, text: str, approvals: list[str], approved_by: list[str]
    ) -> tuple[int, list[dict[str, str]]]:
        """Store ``new`` as the policy in force and revoke, in the same transaction, every live identity it
        no longer allows (:func:`fedattest.coordinator.revocation.revocation_reason`), each with an audit
        entry. Returns the version and the revocations (member, certificate SHA-256, reason)."""
        with self._policy_lock:
            judged = self._judge_live_identities(new)
            now = self._now()
            added: list[RevocationRecord] = []
            with self.store.transaction() as tx:
                version = tx.add_policy(new.policy_hash().hex(), text, approvals, now)
                tx.append_audit(
                    now, "policy", {"version": version, "policy_hash": new.policy_hash().hex(), "approved_by": approved_by}
                )
                for record, serial, reason, code in judged:
                    data = {"member": record.member, "role": record.role, "cert_sha256": record.fingerprint,
                            "serial": str(serial), "reason": reason, "code": code,
                            "policy_hash": new.policy_hash().hex()}  # fmt: skip
                    entry = tx.append_audit(now, "revocation", data)
                    revocation = RevocationRecord(record.fingerprint, record.member, serial, reason, code, now, entry.seq)
                    tx.revoke(revocation)
                    added.append(revocation)
            # A new dict, swapped in whole: readers in other threads (CRL, public keys) never see it change.
            self._revoked = {**self._revoked, **{r.cert_sha256: r for r in added}}
            self.policy = new
        return version, [{"member": r.member, "cert_sha256": r.cert_sha256, "reason": r.reason} for r in added]

    def _judge_live_identities(self, new: FederationPolicy) -> list[tuple[ActivationRecord, int, str, str]]:
        """(record, certificate serial, reason, CRL reason code) of each live identity ``new`` revokes. Live:
        not revoked yet and not expired. Attested ones are re-verified with the quote and collateral recorded
        at activation, at the activation's time, to appraise them against ``new``'s reference values."""
        versions = {v.policy_hash: v.document for v in self.store.policy_versions()}
        collateral = self.store.collateral_documents()
        reprovisioned = self.store.provisioned_under()  # the policy each identity was last provisioned under
        policies: dict[str, FederationPolicy | None] = {}
        now = self._utc()
        out = []
        for record in self.store.activations():
            if record.fingerprint in self._revoked:
                continue
            cert = x509.load_pem_x509_certificate(record.certificate.encode())
            if cert.not_valid_after_utc <= now:
                continue
            # The policy it was last provisioned under: its activation's, or a later re-provisioning's.
            policy_hash = reprovisioned.get(record.fingerprint) or str(record.verdict.get("claims", {}).get("policy_hash", ""))
            if policy_hash not in policies:
                document = versions.get(policy_hash)
                policies[policy_hash] = parse_policy(document) if document is not None else None
            verified: VerifiedQuote | None = None
            judged: tuple[str, x509.ReasonFlags] | None = None
            unchecked = "its recorded evidence cannot be checked again: "  # fail closed
            try:
                if record.verdict.get("attestation") == "verified":
                    raw = base64.b64decode(str(record.verdict["quote_b64"]))
                    bundle = Collateral.from_json(collateral[str(record.verdict["collateral_sha256"])])
                    # Verified again through the entry point, at the activation's time; appraised by
                    # revocation_reason against the new policy's reference values.
                    at = parse_time(record.created)
                    again = attest(raw, collateral=bundle, verifier=self.verifier, reference=AnyCode(), at=at)
                    verified = again.verified
                    if not again.accepted:
                        judged = (unchecked + again.reason, x509.ReasonFlags.privilege_withdrawn)
                if judged is None:
                    judged = revocation_reason(record.member, record.role, verified, policies[policy_hash], new)
            except (FedattestError, KeyError, ValueError) as exc:
                judged = (f"{unchecked}{exc}", x509.ReasonFlags.privilege_withdrawn)
            if judged is not None:
                out.append((record, cert.serial_number, judged[0], judged[1].value))
        return out

    def _collateral_document(self, collateral: Collateral) -> tuple[str, str]:
        """(SHA-256, JSON) of a collateral bundle; memoised because the same bundle serves many activations."""
        cached = self._collateral_docs.get(id(collateral))
        if cached is None or cached[0] is not collateral:
            document = collateral.to_json()
            cached = (collateral, hashlib.sha256(document.encode()).hexdigest(), document)
            self._collateral_docs = {id(collateral): cached}  # one entry: bundles change rarely
        return cached[1], cached[2]

    def evidence(self) -> dict[str, Any]:
        """Everything an offline auditor needs besides the log itself (see :mod:`fedattest.coordinator.bundle`)."""
        return {
            "policies": [vars(v) for v in self.store.policy_versions()],
            "activations": [vars(r) for r in self.store.activations()],
            "collateral": self.store.collateral_documents(),
            "root_ca": self.state.root_ca.public_bytes(serialization.Encoding.PEM).decode(),
        }

    def _utc(self) -> datetime:
        """The coordinator's one clock (``clock``), as a UTC datetime: quotes are verified, certificates issued
        and tokens stamped at the same moment."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def _now(self) -> str:
        return format_time(self.clock())

    @property
    def root_public_key_der(self) -> bytes:
        return self.state.root_ca.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # -- endpoints' logic ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "federation": self.policy.name,
            "policy_hash": self.policy.policy_hash().hex(),
            "tee": self.tee.kind,
            "simulated": self.tee.simulated,
            "root_ca_sha256": ident.spki_sha256(self.state.root_ca),
            "activations": sum(total for total, _ in self.store.activation_counts().values()),
        }

    def quote(self, nonce: bytes) -> dict[str, Any]:
        if len(nonce) != 32:
            raise ActivationError("nonce must be 32 bytes (64 hex digits)", 400)
        report_data = ident.coordinator_report_data(self.root_public_key_der, self.policy.policy_hash(), nonce)
        self._count("quotes_served")
        return {
            "quote": base64.b64encode(self.tee.quote(report_data)).decode(),
            "root_ca": self.state.root_ca.public_bytes(serialization.Encoding.PEM).decode(),
            "policy_hash": self.policy.policy_hash().hex(),
            "policy": self.policy.canonical_bytes().decode(),
        }

    def _count(self, name: str) -> None:
        with self._metrics_lock:
            self.metrics[name] += 1

    def _add_seconds(self, phase: str, seconds: float) -> None:
        with self._metrics_lock:
            self.phase_seconds[phase] += seconds

    def _nonce_mac(self, body: bytes) -> bytes:
        return hmac.new(self._nonce_key, _NONCE_MAC + body, hashlib.sha256).digest()[:16]

    def new_nonce(self) -> str:
        # Stateless: nothing is stored until the nonce is redeemed (see _NONCE_MAC).
        body = secrets.token_bytes(12) + int(self.clock()).to_bytes(4, "big")
        return (body + self._nonce_mac(body)).hex()

    def _use_nonce(self, nonce: str) -> None:
        try:
            raw = bytes.fromhex(nonce)
        except ValueError:
            raw = b""
        if len(raw) != 32 or not hmac.compare_digest(raw[16:], self._nonce_mac(raw[:16])):
            raise ActivationError(
                "unknown nonce: not issued by this coordinator (or before it restarted): get one from POST /api/v1/nonce", 409
            )
        now = self.clock()
        issued = int.from_bytes(raw[12:16], "big")
        if issued < now - NONCE_TTL_SECONDS:
            raise ActivationError("this nonce has expired: get a fresh one", 409)
        with self._nonce_lock:
            if raw in self._redeemed:
                raise ActivationError("nonce used already (replay): get a fresh one from POST /api/v1/nonce", 409)
            if len(self._redeemed) >= MAX_REDEEMED_NONCES:
                self._redeemed = {n: t for n, t in self._redeemed.items() if t > now}
            if len(self._redeemed) >= MAX_REDEEMED_NONCES:  # only attested activations get here
                raise ActivationError("too many activations in the last 5 minutes: try again later", 503)
            self._redeemed[raw] = issued + NONCE_TTL_SECONDS + 1

    def activate(
        self,
        member_name: str,
        quote_b64: str | None,
        csr_pem: str,
        claims: dict[str, Any],
        public_keys: dict[str, str] | None = None,
        *,
        enrolment: str | None = None,
        live: bool = False,
    ) -> dict[str, Any]:
        """Activate an enclave as ``member_name``. ``enrolment`` is the member's signature over ``claims``
        (:func:`fedattest.pki.identity.sign_enrolment`) with the key the policy lists for it. Refused (409, naming
        it) while another identity of the member is running (:meth:`alive`). ``live``: the caller runs the new
        identity and heartbeats, so it counts as running from this moment (a launcher started at the same time
        is refused, rather than racing the first heartbeat)."""
        try:
            result = self._activate(member_name, quote_b64, csr_pem, claims, public_keys or {}, enrolment, live)
        except ActivationError as exc:
            self._count("activations_refused")
            event("activation", outcome="refused", member=member_name, status=exc.status, reason=exc)
            raise
        self._count("activations_accepted")
        return result

    def _activate(  # noqa: PLR0917 - the request's fields
        self,
        member_name: str,
        quote_b64: str | None,
        csr_pem: str,
        claims: dict[str, Any],
        public_keys: dict[str, str],
        enrolment: str | None,
        live: bool,
    ) -> dict[str, Any]:
        policy = self.policy
        # Claims shape first, then the nonce (good for one attempt, whatever becomes of it: nothing costly is done
        # for a replayed one), then the pure checks, then the evidence.
        nonce = claims_nonce(claims)
        self._use_nonce(nonce)
        checked = check_request(policy, member_name, csr_pem, claims, public_keys, enrolment)
        member, role, csr, extra_hashes = checked.member, policy.roles[checked.member.role], checked.csr, checked.public_keys
        # Before the quote is verified and long before an activation is spent; only the member itself (its enrolment
        # signature checked) learns which identity is running. Checked again at the commit, against a race.
        self._refuse_if_running(member.name)
        verdict: dict[str, Any] = {"attestation": "off", "simulated": None}
        collateral: Collateral | None = None
        token_claims: dict[str, Any] = {"attestation": "off"}
        if role.attestation_required:
            started = time.perf_counter()
            raw, outcome = self._attest_member(policy, member, quote_b64, claims)
            self._add_seconds("verify", time.perf_counter() - started)
            verified, collateral = outcome.verified, outcome.collateral
            assert verified is not None and collateral is not None
            verdict = {
                "attestation": "verified",
                "mrenclave": verified.mr_enclave.hex() if verified.mr_enclave is not None else None,
                "mrsigner": verified.mr_signer.hex() if verified.mr_signer is not None else None,
                "tcb_status": verified.tcb_status.value,
                "advisory_ids": list(verified.advisory_ids),
                "simulated": verified.simulated,
                "notes": list(outcome.notes),
                "quote_sha256": hashlib.sha256(raw).hexdigest(),
                "collateral_sha256": self._collateral_document(collateral)[0],
                "enclave": verified.enclave_identity(),  # what re-provisioning must show again
            }
            token_claims = {
                k: verdict[k] for k in ("attestation", "mrenclave", "mrsigner", "tcb_status", "advisory_ids", "simulated")
            }
        now = self.clock()
        started = time.perf_counter()
        issued = self._utc()
        uri = MEMBER_URI.format(federation=policy.name, member=member.name)
        # The aggregator's dns_names are the names SuperNodes connect to; an address among them (a deployment
        # without DNS) goes into the certificate as an IP address, the only form TLS clients match it against.
        dns_names, ips = ident.names_and_addresses(list(member.dns_names))
        cert = ident.issue_leaf(
            ca_key=self.state.root_key, ca=self.state.root_ca, public_key=csr.public_key(),  # type: ignore[arg-type]
            common_name=member.name, uris=[uri], dns_names=dns_names, ips=ips, now=issued,
            lifetime=self.cert_lifetime,
        )  # fmt: skip
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        verdict["public_keys"] = extra_hashes
        token = self._token(policy, member, token_claims, fingerprint, now, now + self.cert_lifetime.total_seconds())
        self._add_seconds("issue", time.perf_counter() - started)
        started = time.perf_counter()
        try:
            with self._policy_lock:
                # Two launchers activating at once both passed the first check: under the lock, the second one sees
                # the first (``live``) and is refused before anything is spent.
                self._refuse_if_running(member.name)
                with self.store.transaction() as tx:
                    created = self._now()
                    if self.policy is not policy:  # replaced while this activation was checked: judge it again
                        raise ActivationError(
                            "the policy changed during this activation: fetch the current policy and retry", 409
                        )
                    if tx.activation_count(member.name) >= member.max_activations:
                        raise StoreError(f"member {member.name!r} has used all {member.max_activations} activations")
                    # Kept for the offline audit bundle: the quote, what it binds, and the collateral it was verified with.
                    record_verdict = {
                        **verdict, "public_key_pems": public_keys, "claims": claims, "quote_b64": quote_b64 or None,
                        "enrolment": enrolment,
                    }  # fmt: skip
                    if collateral is not None:
                        tx.add_collateral(*self._collateral_document(collateral))
                    tx.add_activation(
                        ActivationRecord(member.name, member.role, cert_pem, fingerprint, token, record_verdict, created)
                    )
                    tx.append_audit(
                        created, "activation", {"member": member.name, "role": member.role, "cert_sha256": fingerprint, **verdict}
                    )
                if live:  # committed: from now on this identity is the running one
                    expires = cert.not_valid_after_utc.timestamp()
                    self._mark_seen(member.name, fingerprint, _Seen(cert.serial_number, created, expires, self.monotonic()))
        except StoreUnavailableError:
            raise  # 503: the store, not the request (see the API's handler)
        except StoreError as exc:
            raise ActivationError(str(exc), 409) from None
        self._add_seconds("store", time.perf_counter() - started)
        event("activation", outcome="accepted", member=member.name, role=member.role, attestation=verdict["attestation"],
              mrenclave=str(verdict.get("mrenclave"))[:16], tcb=verdict.get("tcb_status"), cert=fingerprint[:16])  # fmt: skip
        return {
            "certificate_chain": cert_pem + self.state.root_ca.public_bytes(serialization.Encoding.PEM).decode(),
            "token": token,
            "provisioned": self._provisioned(policy, member, str(verdict["attestation"])),
        }

    def _attest_member(
        self, policy: FederationPolicy, member: Member, quote_b64: str | None, claims: dict[str, Any]
    ) -> tuple[bytes, Attestation]:
        """The member's quote (base64, bounded) attested against its reference values under ``policy``, bound to
        ``claims``: (the raw quote, the accepted attestation), or :class:`ActivationError` saying why not."""
        if not quote_b64:
            raise ActivationError(f"role {member.role!r} requires attestation: send a quote", 400)
        try:
            raw = base64.b64decode(quote_b64, validate=True)
        except ValueError:
            raise ActivationError("quote is not base64", 400) from None
        if len(raw) > MAX_QUOTE_BYTES:
            raise ActivationError("quote is too large", 413)
        reference = policy.reference_for(member)
        assert reference is not None  # attestation_required implies reference values
        outcome = attest(raw, collateral=self.collateral_for, verifier=self.verifier, reference=reference,
                         expected_report_data=ident.claims_report_data(claims), at=self._utc())  # fmt: skip
        if outcome.evidence_failed:
            raise ActivationError(f"quote rejected: {outcome.reason}")
        if outcome.step == REPORT_DATA:
            raise ActivationError("quote report data does not bind these claims")
        if not outcome.accepted:
            raise ActivationError(f"evidence does not match role {member.role!r}: {outcome.reason}")
        return raw, outcome

    def _token(  # noqa: PLR0917 - the token's parts
        self, policy: FederationPolicy, member: Member, attested: dict[str, Any], fingerprint: str, now: float, expires: float
    ) -> str:
        """The member's attestation token (ES256 JWT, ``x5c`` = the token signer's certificate) for the identity
        whose certificate has SHA-256 ``fingerprint``, under ``policy``."""
        payload = {
            "iss": f"fedattest-coordinator:{policy.name}",
            "sub": member.name,
            "role": member.role,
            **attested,
            "data_commitment": member.data_commitment.hex() if member.data_commitment else None,
            "policy_hash": policy.policy_hash().hex(),
            "cert_sha256": fingerprint,
            "iat": int(now),
            "exp": int(expires),
            "jti": secrets.token_hex(16),
        }
        return jwt.encode(payload, self.state.token_key, algorithm="ES256", headers={"kid": self.jwk["kid"], "x5c": self._x5c})

    def _provisioned(self, policy: FederationPolicy, member: Member, attestation: str) -> dict[str, Any]:
        """What a member's enclave is given under ``policy``: its role, data commitment, DP and training settings,
        the allowed apps, and its member secret."""
        member_secret = HKDF(hashes.SHA256(), 32, salt=b"fedattest-member-secret-v1", info=member.name.encode()).derive(
            self.state.master_secret
        )
        return {
            "federation": policy.name,
            "role": member.role,
            "policy_hash": policy.policy_hash().hex(),
            "data_commitment": member.data_commitment.hex() if member.data_commitment else None,
            "dp": policy.dp.model_dump(),
            "rounds": policy.training.rounds,
            "attestation": attestation,
            "allowed_app_hashes": [h.hex() for h in policy.apps.allowed_hashes],
            "member_secret": member_secret.hex(),
        }

    def reprovision(
        self, member_name: str, quote_b64: str | None, certificate_pem: str, claims: dict[str, Any], signature: str
    ) -> dict[str, Any]:
        """Provision a live identity under the policy now in force, without a new activation: the same enclave
        (same measurement as at its activation, re-attested now against the current reference values, over
        fresh claims that bind its certificate's key) proves it holds the key (``signature``,
        :func:`fedattest.pki.identity.sign_reprovision`). Answers a new token and the provisioned parameters;
        recorded in the audit log (``reprovision``), not counted as an activation."""
        try:
            result = self._reprovision(member_name, quote_b64, certificate_pem, claims, signature)
        except ActivationError as exc:
            self._count("reprovisions_refused")
            event("reprovision", outcome="refused", member=member_name, status=exc.status, reason=exc)
            raise
        self._count("reprovisions_accepted")
        event("reprovision", outcome="accepted", member=member_name, policy=str(result["provisioned"]["policy_hash"])[:16])
        return result

    # 410 Gone for every refusal that means "this identity cannot be re-provisioned: activate anew"; other
    # refusals (409: a replay, a policy changing meanwhile; 429, 503) are worth retrying with the same identity.
    def _reprovision(
        self, member_name: str, quote_b64: str | None, certificate_pem: str, claims: dict[str, Any], signature: str
    ) -> dict[str, Any]:
        policy = self.policy
        self._use_nonce(claims_nonce(claims))  # first, as for an activation
        checked = check_reprovision(policy, member_name, certificate_pem, claims, signature, self.state.root_ca)
        member, fingerprint = checked.member, checked.fingerprint
        record = self.store.activation_of(member_name, fingerprint)
        if record is None:
            raise ActivationError(f"no activation of {member_name!r} issued this certificate", 400)
        revoked = self._revoked.get(fingerprint)
        if revoked is not None:
            raise ActivationError(f"this identity was revoked ({revoked.reason}): activate anew", 410)
        if checked.certificate.not_valid_after_utc <= self._utc():
            raise ActivationError("this identity's certificate has expired: activate anew", 410)
        if record.role != member.role:
            raise ActivationError(f"the member's role is now {member.role!r}, not {record.role!r}: activate anew", 410)
        provisioned = self.store.provisioned_under(fingerprint).get(fingerprint) or record.verdict.get("claims", {}).get(
            "policy_hash"
        )
        if provisioned == policy.policy_hash().hex():  # each identity once per policy version: no audit-log flood
            raise ActivationError("this identity is provisioned under the current policy already", 409)
        check_same_keys(claims, dict(record.verdict.get("public_keys") or {}))
        attested: dict[str, Any] = {"attestation": "off"}
        entry: dict[str, Any] = {"member": member.name, "role": member.role, "cert_sha256": fingerprint, "attestation": "off"}
        collateral: Collateral | None = None
        if policy.roles[member.role].attestation_required:
            _, outcome = self._attest_member(policy, member, quote_b64, claims)
            verified, collateral = outcome.verified, outcome.collateral
            assert verified is not None and collateral is not None
            mrenclave = verified.mr_enclave.hex() if verified.mr_enclave is not None else None
            mrsigner = verified.mr_signer.hex() if verified.mr_signer is not None else None
            recorded = record.verdict.get("enclave")
            if recorded is None:  # recorded before the whole identity was kept: its code and signer, then
                recorded = {"mrenclave": record.verdict.get("mrenclave"), "mrsigner": record.verdict.get("mrsigner")}
            now_identity = verified.enclave_identity()
            changed = sorted(k for k in set(recorded) | set(now_identity) if recorded.get(k) != now_identity.get(k))
            if changed:
                raise ActivationError(
                    f"this is not the enclave that was activated ({', '.join(changed)} differ): activate anew", 410
                )
            attested = {
                "attestation": "verified", "mrenclave": mrenclave, "mrsigner": mrsigner, "tcb_status": verified.tcb_status.value,
                "advisory_ids": list(verified.advisory_ids), "simulated": verified.simulated,
            }  # fmt: skip
            entry |= attested | {
                "quote_b64": quote_b64, "claims": claims, "signature": signature,
                "collateral_sha256": self._collateral_document(collateral)[0],
            }  # fmt: skip
        else:
            entry |= {"claims": claims, "signature": signature}
        entry["policy_hash"] = policy.policy_hash().hex()
        now = self.clock()
        token = self._token(policy, member, attested, fingerprint, now, checked.certificate.not_valid_after_utc.timestamp())
        try:
            with self._policy_lock, self.store.transaction() as tx:
                if self.policy is not policy:
                    raise ActivationError("the policy changed during this request: fetch the current policy and retry", 409)
                if fingerprint in self._revoked:
                    raise ActivationError("this identity was revoked during this request: activate anew", 410)
                if collateral is not None:
                    tx.add_collateral(*self._collateral_document(collateral))
                tx.append_audit(self._now(), "reprovision", entry)
        except StoreUnavailableError:
            raise
        except StoreError as exc:
            raise ActivationError(str(exc), 409) from None
        return {"token": token, "provisioned": self._provisioned(policy, member, str(attested["attestation"]))}

    # -- liveness: which identity of a member is running ------------------------------------------------
    def alive(self, certificate_pem: str, claims: dict[str, Any], signature: str) -> dict[str, Any]:
        """A running identity's heartbeat (claims ``{member, serial, time}`` signed with its certificate's key,
        :func:`fedattest.pki.identity.sign_alive`): recorded in memory as that member's running identity, and
        answered with the policy in force (what ``GET /api/v1/policy`` answers), so a launcher keeps up with
        policy versions and says it is running in one request. Not an audit entry: it decides nothing."""
        member = str(claims.get("member", "")) if isinstance(claims, dict) else ""
        try:
            result = self._alive(certificate_pem, claims, signature)
        except ActivationError as exc:
            self._count("heartbeats_refused")
            # A refused launcher heartbeats every 5 s: one line per member and reason, not one per heartbeat.
            known = self.policy.member(member) is not None
            if not known or self._alive_refused.get(member) != str(exc):
                event("alive", outcome="refused", member=member, status=exc.status, reason=exc)
                if known:
                    self._alive_refused[member] = str(exc)
            raise
        self._count("heartbeats_accepted")
        self._alive_refused.pop(member, None)
        return result

    def _alive(self, certificate_pem: str, claims: dict[str, Any], signature: str) -> dict[str, Any]:
        policy = self.policy
        checked = check_alive(policy, certificate_pem, claims, signature, self.state.root_ca)
        member, fingerprint = checked.member, checked.fingerprint
        skew = claims["time"] - self.clock()
        if abs(skew) > ALIVE_SKEW_SECONDS:
            raise ActivationError(
                f"the heartbeat's time is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the coordinator's clock"
                f" (at most {ALIVE_SKEW_SECONDS:g} s): check this host's clock", 400
            )  # fmt: skip
        record = self.store.activation_of(member.name, fingerprint)
        if record is None:
            raise ActivationError(f"no activation of {member.name!r} issued this certificate")
        revoked = self._revoked.get(fingerprint)
        if revoked is not None:
            raise ActivationError(f"this identity was revoked ({revoked.reason}): activate anew", 410)
        expires = checked.certificate.not_valid_after_utc.timestamp()
        if expires <= self.clock():
            raise ActivationError("this identity's certificate has expired: activate anew", 410)
        seen = _Seen(checked.certificate.serial_number, record.created, expires, self.monotonic())
        if self._mark_seen(member.name, fingerprint, seen):
            event("alive", outcome="running", member=member.name, cert=fingerprint[:16])
        return {
            "policy_hash": policy.policy_hash().hex(),
            "policy": policy.canonical_bytes().decode(),
            "live_seconds": self.live_seconds,
        }

    def _mark_seen(self, member: str, fingerprint: str, seen: _Seen) -> bool:
        """Record ``seen`` as the member's identity ``fingerprint``'s last heartbeat; whether it was not running
        before (just started, or back after a silence longer than ``live_seconds``)."""
        with self._seen_lock:
            identities = self._seen.setdefault(member, {})
            before = identities.get(fingerprint)
            # Forget the member's identities silent for longer than the window: the table holds running ones only.
            for other, last in list(identities.items()):
                if seen.at - last.at > self.live_seconds:
                    del identities[other]
            identities[fingerprint] = seen
        return before is None or seen.at - before.at > self.live_seconds

    def _refuse_if_running(self, member: str) -> None:
        """:class:`ActivationError` (409) naming the member's running identity, if one heartbeated within
        ``live_seconds`` and is neither revoked nor expired; a fresh activation would replace its node key."""
        if self.live_seconds <= 0:
            return
        now, wall = self.monotonic(), self.clock()
        with self._seen_lock:
            running = [
                s for fingerprint, s in self._seen.get(member, {}).items()
                if now - s.at <= self.live_seconds and fingerprint not in self._revoked and s.expires > wall
            ]  # fmt: skip
        if not running:
            return
        last = max(running, key=lambda s: s.at)
        raise ActivationError(
            f"member {member!r} is already running: identity {format(last.serial, 'x')[:16]} activated {last.activated},"
            f" last heard from {now - last.at:.0f} s ago; stop it first (it stops counting as running"
            f" {self.live_seconds:g} s after its last heartbeat)", 409
        )  # fmt: skip

    def report_round(self, certificate_pem: str, signature_b64: str, report: dict[str, Any]) -> dict[str, Any]:
        """Record a training round in the audit log: the aggregator reports the round number, the members
        that took part and the SHA-256 of the aggregated parameters, signed with its attested key; optionally the
        round's metrics and each participant's Flower node id (:mod:`fedattest.coordinator.round_report`)."""
        # The optional fields' shape first: cheap, and a bad value is refused with its own reason (a NaN would
        # otherwise surface as a canonical-JSON error of the signature check).
        problem = None
        if "metrics" in report:
            problem = metrics_problem(report["metrics"])
        if problem is None and "nodes" in report:
            problem = nodes_problem(report["nodes"], report.get("participants") or [])
        if problem is not None:
            raise ActivationError(f"round report refused: {problem}", 400)
        member, cert_sha256 = self._aggregator_signed(certificate_pem, signature_b64, report, "round", "reports rounds")
        if int(report["round"]) > self.policy.training.rounds:
            raise ActivationError(
                f"round report refused: round {report['round']} is beyond the policy's {self.policy.training.rounds} rounds"
            )
        dp = report.get("dp")
        wanted = self.policy.dp.aggregation()
        if dp is not None and any(float(dp[k]) != float(v) for k, v in wanted.items()):
            raise ActivationError(f"round report refused: aggregated with DP {dp}, the policy in force says {wanted}")
        if self.policy.privacy is not None and (str(report["run_id"]), int(report["round"])) not in self._reserved:
            raise ActivationError(
                f"round report refused: no privacy budget was reserved for run {report['run_id']} round {report['round']}"
                " (POST /api/v1/reserve before the release)"
            )
        unknown = [m for m in report["participants"] if self.policy.member(m) is None]
        if unknown:
            raise ActivationError(f"round report names members not in the policy: {unknown}", 400)
        revoked_only = []
        for name in report["participants"] if self._revoked else []:
            records = self.store.activations(name)
            if records and all(r.fingerprint in self._revoked for r in records):
                revoked_only.append(name)
        if revoked_only:
            raise ActivationError(f"round report names members whose identities were all revoked: {revoked_only}")
        now = self._now()
        try:
            with self.store.transaction() as tx:
                entry = tx.append_audit(
                    now, "round", {"reported_by": member, **report, "certificate_sha256": cert_sha256, "signature": signature_b64}
                )
                tx.add_round(int(report["run_id"]), int(report["round"]), member, entry.seq)  # unique: a replay rolls back
        except StoreUnavailableError:
            raise  # 503: the store, not the request (see the API's handler)
        except StoreError as exc:
            raise ActivationError(str(exc), 409) from None
        event("round", outcome="recorded", run=report["run_id"], round=report["round"], participants=len(report["participants"]),
              refused=len(report.get("refused") or []), seq=entry.seq)  # fmt: skip
        return {"seq": entry.seq}

    def _aggregator_signed(
        self, certificate_pem: str, signature_b64: str, doc: dict[str, Any], what: str, does: str
    ) -> tuple[str, str]:
        """(member, certificate SHA-256) of the aggregator that signed ``doc`` (a round report or a reservation,
        ``what``: the signature's message id is ``{what}-{round}``, so one cannot stand for the other), with a
        certificate this coordinator issued and did not revoke; :class:`ActivationError` otherwise."""
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            body = ident.canonical_claims(doc)
            member = UpdateVerifier(self.state.root_ca, self.policy.name).verify(
                certificate_pem.encode(), signature, int(doc["run_id"]), f"{what}-{int(doc['round'])}", body
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ActivationError(f"malformed {what} request: {exc}", 400) from None
        except UpdateRejectedError as exc:
            raise ActivationError(f"{what} refused: {exc}") from None
        cert_sha256 = hashlib.sha256(
            x509.load_pem_x509_certificate(certificate_pem.encode()).public_bytes(serialization.Encoding.DER)
        ).hexdigest()
        revoked = self._revoked.get(cert_sha256)
        if revoked is not None:
            raise ActivationError(f"{what} refused: the signer's certificate was revoked ({revoked.reason})")
        signer = self.policy.member(member)
        if signer is None or signer.role != "aggregator":
            raise ActivationError(f"only the aggregator {does}, not {member!r}")
        return member, cert_sha256

    # -- the privacy ledger ---------------------------------------------------------------------------
    def reserve(self, certificate_pem: str, signature_b64: str, request: dict[str, Any]) -> dict[str, Any]:
        """Reserve the privacy budget for one release before it happens: round ``round`` of training run ``run_id``
        (``{run_id: "decimal", round}``, signed by the aggregator). What it costs is the policy's, never the
        caller's: a DP-FedAvg round under the policy's DP, with ``sampled_clients`` of its collaborators. Recorded
        as a ``reservation`` audit entry, checked and appended as one step (two runs racing for the last ε: one
        gets it). Refused (409) with what remains when it would overspend ``[privacy]``; a release reserved
        already is answered as it was (a retry does not pay twice). Without ``[privacy]`` nothing is charged."""
        if not isinstance(request, dict) or set(request) != {"run_id", "round"}:
            raise ActivationError("a reservation is exactly {run_id, round}", 400)
        run_id, round_number = request["run_id"], request["round"]
        if not isinstance(run_id, str) or not run_id.isdigit() or int(run_id) >= 1 << 64 or type(round_number) is not int:
            raise ActivationError("a reservation's run_id is a uint64 as a decimal string, its round an integer", 400)
        member, cert_sha256 = self._aggregator_signed(certificate_pem, signature_b64, request, "reserve", "reserves budget")
        policy = self.policy
        if not 1 <= round_number <= policy.training.rounds:
            rounds = policy.training.rounds
            raise ActivationError(f"reservation refused: round {round_number} is not one of the policy's {rounds}", 400)
        budget = policy.privacy
        if budget is None:
            return {"reserved": False, "reason": "the policy in force sets no privacy budget: nothing is charged"}
        collaborators = sum(1 for m in policy.members if m.role == "collaborator")
        release = training_round(policy.dp, collaborators)
        with self._ledger_lock:
            known = self._reserved.get((run_id, round_number))
            if known is not None:
                return {"reserved": True, "seq": known[1], "release": known[0].to_json(), "again": True}
            reserved = [r for r, _ in self._reserved.values()]
            cost = charge(budget, reserved, release)
            if not cost.fits:
                event("reservation", outcome="refused", run=run_id, round=round_number, reason=cost.reason)
                raise ActivationError(f"reservation refused: {cost.reason}", 409)
            # The aggregator's signed request is kept, so `audit verify` checks who asked, as for round reports.
            data = {"run_id": run_id, "round": round_number, "reserved_by": member, "release": release.to_json(),
                    "epsilon_after": cost.epsilon_after, "budget": budget.model_dump(), "certificate_sha256": cert_sha256,
                    "signature": signature_b64}  # fmt: skip
            try:
                with self.store.transaction() as tx:
                    entry = tx.append_audit(self._now(), "reservation", data)
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                raise ActivationError(str(exc), 409) from None
            self._reserved[(run_id, round_number)] = (release, entry.seq)
        event("reservation", outcome="recorded", run=run_id, round=round_number, epsilon=f"{cost.epsilon_after:.4g}",
              budget=budget.epsilon, seq=entry.seq)  # fmt: skip
        return {"reserved": True, "seq": entry.seq, "release": release.to_json(), "epsilon_spent": cost.epsilon_after,
                "epsilon_budget": budget.epsilon, "delta": budget.delta}  # fmt: skip

    def public_keys(self, name: str, role: str | None = None) -> list[dict[str, Any]]:
        """Each member's latest attested public key called ``name`` (e.g. the Flower node key), while its
        certificate is valid: what the aggregator registers with Flower so only attested nodes join."""
        now = self.clock()
        out = []
        for member in self.policy.members:
            if role is not None and member.role != role:
                continue
            last = self.store.latest_activation(member.name)
            if last is None or name not in last.verdict.get("public_key_pems", {}):
                continue
            if last.fingerprint in self._revoked:  # its identity was revoked: no key until it activates again
                continue
            cert = x509.load_pem_x509_certificate(last.certificate.encode())
            expires = cert.not_valid_after_utc.timestamp()
            if expires <= now:
                continue
            out.append(
                {"member": member.name, "public_key": last.verdict["public_key_pems"][name], "expires": int(expires)}
            )
        return out

    def members(self) -> list[dict[str, Any]]:
        out = []
        counts = self.store.activation_counts()
        for m in self.policy.members:
            total, revoked = counts.get(m.name, (0, 0))
            last = self.store.latest_activation(m.name) if total else None
            out.append({
                "name": m.name, "role": m.role, "activations": total, "max_activations": m.max_activations,
                "revoked": revoked, "last_activation": last.created if last else None,
                "attestation": last.verdict.get("attestation") if last else None,
            })  # fmt: skip
        return out

    def overview(self) -> dict[str, Any]:
        """The federation at a glance (:mod:`fedattest.coordinator.overview`), bounded whatever the log holds: what
        ``GET /api/v1/overview`` and the ``/status`` page show."""
        policy = self.policy
        commitments = {m.name: m.data_commitment.hex() if m.data_commitment else None for m in policy.members}
        node_keys = {str(e["member"]): e for e in self.public_keys("node")}
        members, state = self.members(), self.status()
        with self._overview_lock:
            for entry in self.store.audit_entries(after=self._folded.seq):
                self._folded.add({"seq": entry.seq, "time": entry.time, "kind": entry.kind, "data": entry.data})
            return overview(state, members, node_keys, self._folded, commitments)

    def crl(self) -> bytes:
        """The DER X.509 CRL of every revoked member certificate, signed by the root CA, valid for an hour
        (:mod:`fedattest.pki.crl`). Re-signed at most once a minute, and at once after a revocation."""
        key = (len(self._revoked), int(self.clock() // 60))
        if self._crl is None or self._crl[0] != key:
            revoked = [
                RevokedCertificate(r.serial, parse_time(r.created),
                                   x509.ReasonFlags(r.code))
                for r in self._revoked.values()
            ]  # fmt: skip
            der = build_crl(self.state.root_key, self.state.root_ca, revoked,
                            now=self._utc(), number=len(revoked))  # fmt: skip
            self._crl = (key, der)
        return self._crl[1]

    def signed_head(self) -> SignedHead:
        entries = self.store.audit_entries()
        return sign_head(entries[-1], self.state.token_key)

    def audit_export(self) -> bytes:
        entries = self.store.audit_entries()
        return export_log(entries, sign_head(entries[-1], self.state.token_key), self.state.token_key.public_key())

    def metrics_text(self) -> str:
        lines = []
        with self._metrics_lock:
            metrics, phases = dict(self.metrics), dict(self.phase_seconds)
        for name, value in sorted(metrics.items()):
            lines += [f"# TYPE fedattest_{name}_total counter", f"fedattest_{name}_total {value}"]
        lines.append("# TYPE fedattest_activation_phase_seconds_total counter")
        for phase, seconds in sorted(phases.items()):
            lines.append(f'fedattest_activation_phase_seconds_total{{phase="{phase}"}} {seconds:.6f}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.store.close()
        if self.on_close is not None:
            self.on_close()


def open_coordinator(
    state_dir: Path,
    *,
    tee: TEE,
    verifier: QuoteVerifier,
    collateral_for: Callable[[Quote], Collateral],
    policy_text: str | None = None,
    approvals: list[str] | None = None,
    cert_lifetime: timedelta = timedelta(days=1),
    clock: Callable[[], float] = time.time,
    new_state: bool = False,
    accept_store: bool = False,
    open_store: Callable[[Path], Store] | None = None,
) -> Coordinator:
    """Open ``state_dir`` (lock it, check the store against the sealed head, unseal or create the state) and
    start a :class:`Coordinator` on it. ``new_state`` moves an old state aside and begins a new federation
    state; ``accept_store`` runs on the store as it is although the sealed head disagrees (recorded in the
    audit log); ``open_store`` opens the store (default: SQLite in the state directory). Whatever fails,
    nothing stays open."""
    directory = StateDirectory(state_dir, tee, new_state=new_state, accept_store=accept_store)
    store: Store | None = None
    try:
        store, accepted = directory.open_store(open_store)
        return Coordinator(
            tee=tee, verifier=verifier, collateral_for=collateral_for, store=store, unseal_state=directory.sealed_state,
            policy_text=policy_text, approvals=approvals or [], cert_lifetime=cert_lifetime, clock=clock,
            accepted_store=accepted, on_close=directory.close,
        )  # fmt: skip
    except BaseException:
        if store is not None:
            store.close()
        directory.close()
        raise
