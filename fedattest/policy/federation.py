"""The federation policy: one TOML document every member approves, its canonical bytes and its hash.

It says what the coordinator and each role must run (reference values, and whether attestation is
required for the role at all), who the members are (name, role, data commitment, DNS names, how many
activations), the DP settings, which application code may run, and who must approve it. Members
approve the policy by signing its hash (:mod:`fedattest.policy.approval`).

Canonical bytes are the RFC 8785 (JCS) form of the validated document, every field present (defaults filled
in) and every array of plain strings or numbers sorted (they are sets), so the hash does not depend on TOML
formatting, key order, comments or hex case, and another language reproduces it from the canonical bytes the
coordinator serves (``tests/vectors/policy/``). Pure: text in, objects out.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from fedattest.canonical import canonical_json
from fedattest.errors import FedattestError
from fedattest.policy.appraisal import ReferenceValues
from fedattest.policy.dp import DpSettings, PrivacyBudget
from fedattest.shape import MAX_NESTING, nesting_depth

# v2: the canonical bytes are RFC 8785 (v1 was Python's json.dumps, whose floats no other language reproduces).
POLICY_HASH_LABEL = b"fedattest-policy-v2\n"
COMMITMENT_BINDING = "data-commitment"  # a role's config_id: each member's CONFIGID is its data commitment
# A policy is a few KB (about 300 bytes a member, 500 an approver key); 1 MiB is thousands of members. The
# limits hold for every policy parsed, so a document read from an audit bundle or a file cannot exhaust memory
# or the parser's recursion (tomllib recurses once per nested array or inline table).
MAX_POLICY_BYTES = 1 << 20
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_DNS = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class PolicyError(FedattestError):
    """A policy that cannot be used. The message names the key and says what is expected."""


def _hex32(value: Any) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0x")
        if re.fullmatch(r"[0-9a-f]{64}", text):
            return bytes.fromhex(text)
    raise ValueError(f"expected 64 hex digits (32 bytes), got {value!r}")


Hash32 = Annotated[bytes, BeforeValidator(_hex32), PlainSerializer(lambda b: b.hex(), return_type=str)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class RolePolicy(_Strict):
    """What an enclave in a role must be. ``attestation_required = false`` turns attestation off for the
    role (staged roll-outs); every token and log line then says so."""

    attestation_required: bool = True
    reference: ReferenceValues | None = None
    # ``config_id = "data-commitment"`` in the role's table: each member's enclave must be launched (SGX KSS)
    # with CONFIGID = the member's data commitment (32 bytes) followed by 32 zero bytes, so the hardware
    # report itself says whose data this instance of the common code is for.
    config_id_binding: Literal["data-commitment"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        # In TOML the reference values sit directly in the role's table, next to attestation_required.
        if isinstance(data, dict) and "reference" not in data:
            data = dict(data)
            required = data.pop("attestation_required", True)
            binding = data.pop("config_id") if data.get("config_id") == COMMITMENT_BINDING else None
            return {"attestation_required": required, "reference": data or None, "config_id_binding": binding}
        return data

    @model_validator(mode="after")
    def _needs_reference(self) -> RolePolicy:
        if self.attestation_required and self.reference is None:
            raise ValueError(
                "give the reference values (mrenclave, or mrsigner + isv_prod_id) or set attestation_required = false"
            )
        if self.reference is not None and self.reference.accept_any_code:
            raise ValueError("accept_any_code is not allowed in a federation policy")
        if self.config_id_binding is not None and not self.attestation_required:
            raise ValueError(f'config_id = "{COMMITMENT_BINDING}" needs attestation_required = true')
        return self


def _ed25519_public_pem(value: Any) -> str:
    """The PEM of an Ed25519 public key, checked here so a bad key is a policy error, not a refusal later."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - keeps `policy check` start-up light
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    if not isinstance(value, str):
        raise ValueError("expected the PEM text of an Ed25519 public key")
    try:
        key = serialization.load_pem_public_key(value.strip().encode())
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key: run 'fedattest policy keygen NAME' and paste NAME.pub.pem here") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("must be an Ed25519 public key ('fedattest policy keygen NAME' makes one)")
    return value.strip() + "\n"


class Member(_Strict):
    """A member of the federation. ``enrolment_key`` is the member's own Ed25519 public key: every activation
    as this member must carry the member's signature over the enclave's claims (see
    :func:`fedattest.pki.identity.enrolment_message`), so another enclave cannot activate as it."""

    name: str
    role: Literal["aggregator", "collaborator"]
    enrolment_key: Annotated[str, BeforeValidator(_ed25519_public_pem)]
    data_commitment: Hash32 | None = None
    dns_names: tuple[str, ...] = ()
    max_activations: int = Field(default=1, ge=1, le=1_000_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("lower-case letters, digits, '.', '_' and '-', 1-63 characters, starting with a letter or digit")
        return value

    @field_validator("dns_names")
    @classmethod
    def _dns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _DNS.match(name):
                raise ValueError(f"{name!r} is not a valid lower-case DNS name")
        return value

    @model_validator(mode="after")
    def _role_fields(self) -> Member:
        if self.role == "collaborator" and self.data_commitment is None:
            raise ValueError(f"collaborator {self.name!r} needs a data_commitment (the root from 'fedattest data commit')")
        if self.role == "aggregator" and self.data_commitment is not None:
            raise ValueError(f"aggregator {self.name!r} has no data, so no data_commitment")
        if self.role == "collaborator" and self.dns_names:
            raise ValueError(f"collaborator {self.name!r}: dns_names are for the aggregator")
        return self


class Training(_Strict):
    """Run settings that bound what the federation releases, so they come from the approved policy and never
    from a run's configuration (``flwr run -c`` can override that)."""

    rounds: int = Field(ge=1, le=100_000)


class Approver(_Strict):
    name: str
    public_key: str  # PEM of an Ed25519 public key (see fedattest.policy.approval)


class Approvals(_Strict):
    required: int = Field(ge=1)
    approvers: tuple[Approver, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _enough(self) -> Approvals:
        names = [a.name for a in self.approvers]
        if len(set(names)) != len(names):
            raise ValueError("approver names must be unique")
        if self.required > len(self.approvers):
            raise ValueError(f"required = {self.required} but only {len(self.approvers)} approvers are listed")
        return self


class Apps(_Strict):
    allowed_hashes: tuple[Hash32, ...] = Field(min_length=1)


class FederationPolicy(_Strict):
    version: Literal[1]
    name: str
    coordinator: ReferenceValues
    roles: dict[Literal["aggregator", "collaborator"], RolePolicy]
    members: tuple[Member, ...] = Field(min_length=1)
    dp: DpSettings
    privacy: PrivacyBudget | None = None  # without it, releases are not charged against any budget
    training: Training = Training(rounds=1)
    apps: Apps
    approvals: Approvals

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("lower-case letters, digits, '.', '_' and '-', 1-63 characters")
        return value

    @field_validator("coordinator")
    @classmethod
    def _coordinator(cls, value: ReferenceValues) -> ReferenceValues:
        if value.accept_any_code:
            raise ValueError("the coordinator's code must be pinned (accept_any_code is not allowed)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FederationPolicy:
        if set(self.roles) != {"aggregator", "collaborator"}:
            raise ValueError("roles must define both 'aggregator' and 'collaborator'")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError("member names must be unique")
        if sum(m.role == "aggregator" for m in self.members) != 1:
            raise ValueError("exactly one member must have role 'aggregator'")
        if self.roles["aggregator"].config_id_binding is not None:
            raise ValueError(f'roles.aggregator: config_id = "{COMMITMENT_BINDING}" is for collaborators (no data here)')
        return self

    # -- canonical form ----------------------------------------------------------------------------
    def canonical_bytes(self) -> bytes:
        return self._canonical

    @cached_property
    def _canonical(self) -> bytes:  # the model is frozen, so this is computed once
        doc = self.model_dump(mode="json")
        if doc.get("privacy") is None:  # a policy without a budget keeps the bytes (and hash) it had before [privacy]
            doc.pop("privacy", None)
        return canonical_json(_sorted(doc))

    def policy_hash(self) -> bytes:
        """SHA-256 over a label and the canonical bytes: what approvers sign and quotes bind."""
        return self._hash

    @cached_property
    def _hash(self) -> bytes:
        return hashlib.sha256(POLICY_HASH_LABEL + self.canonical_bytes()).digest()

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def reference_for(self, member: Member) -> ReferenceValues | None:
        """What ``member``'s enclave must show: its role's reference values, with the CONFIGID set to the member's
        data commitment ‖ 32 zero bytes when the role binds it (``config_id = "data-commitment"``). None when the
        role does not require attestation."""
        role = self.roles[member.role]
        if role.reference is None or not role.attestation_required:
            return None
        if role.config_id_binding is None or member.data_commitment is None:
            return role.reference
        return role.reference.model_copy(update={"config_id": member.data_commitment + bytes(32)})


def _sorted(value: Any) -> Any:
    """Sets serialise as lists in arbitrary order: sort them so the canonical bytes are stable."""
    if isinstance(value, dict):
        return {k: _sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_sorted(v) for v in value]
        if all(isinstance(v, str | int | float) for v in items):
            return sorted(items, key=lambda v: (str(type(v)), v))
        return items
    return value


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("reference",) or part.startswith(("function-", "tagged-union")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "policy"


def parse_policy(text: str | bytes) -> FederationPolicy:
    """Parse and validate a policy TOML document. Raises :class:`PolicyError` naming the key."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError("policy: not UTF-8 text") from None
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy: larger than {MAX_POLICY_BYTES >> 20} MiB")
    if nesting_depth(text, toml=True) > MAX_NESTING:
        raise PolicyError(f"policy: arrays or tables nested deeper than {MAX_NESTING} levels")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy: not valid TOML: {exc}") from None
    except RecursionError:  # e.g. a key dotted thousands of times deep; the nesting check catches the rest
        raise PolicyError("policy: nested too deeply") from None
    try:
        return FederationPolicy.model_validate(doc)
    except RecursionError:
        raise PolicyError("policy: nested too deeply") from None
    except ValidationError as exc:
        errors = exc.errors()
        # An unknown key first: a misspelt key (``round`` for ``rounds``) also makes the real one "missing", and
        # the misspelling is what the author has to fix.
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "missing"
        elif first["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(first, errors)
        raise PolicyError(f"{_where(tuple(first['loc']))}: {message}") from None


def _did_you_mean(unknown: Any, errors: list[Any]) -> str:
    """`` (did you mean 'rounds'?)`` when a key missing in the same table is close to the unknown one."""
    loc = tuple(unknown["loc"])
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == loc[:-1]]
    close = difflib.get_close_matches(str(loc[-1]), missing, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
