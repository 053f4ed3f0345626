"""Signing model updates in the ClientApp (a Flower mod) and checking them in the ServerApp.

The mod signs the content of every reply, by its object id (Flower's content hash) together with the
run id, the round (Flower's group id, which the attested strategy sets to the server round), the message
type and the id of the message it answers, with the member's attested key. It adds the signature and
certificate as one config record (which is left out of what is signed). The ServerApp keeps only
replies whose signature verifies for an attested member, and logs every other with the reason.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fedattest.flower.context import identity_dir_for, is_attested, not_attested
from fedattest.pki.signing import UpdateRejectedError, UpdateSigner, UpdateVerifier

SIGNATURE_RECORD = "fedattest.signature"
log = logging.getLogger("fedattest.flower")


def _signed_object_id(content: Any) -> bytes:
    from flwr.app import RecordDict  # noqa: PLC0415 - Flower only here

    unsigned = RecordDict({k: v for k, v in content.items() if k != SIGNATURE_RECORD})
    return bytes.fromhex(unsigned.object_id)


def signing_mod(signer: UpdateSigner) -> Callable[[Any, Any, Callable[[Any, Any], Any]], Any]:
    """A ClientApp mod ``(message, context, call_next) -> reply`` that signs every successful reply."""
    from flwr.app import ConfigRecord  # noqa: PLC0415

    def mod(message: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        reply = call_next(message, context)
        if reply.has_error():
            return reply
        digest = _signed_object_id(reply.content)
        meta = reply.metadata
        signature = signer.sign_reply(
            int(meta.run_id), str(meta.group_id), str(meta.message_type), str(meta.reply_to_message_id), digest
        )
        reply.content[SIGNATURE_RECORD] = ConfigRecord({"signature": signature, "certificate": signer.certificate_pem.decode()})
        return reply

    return mod


@functools.cache
def _signer(identity_dir: Path) -> UpdateSigner:
    return UpdateSigner((identity_dir / "key.pem").read_bytes(), (identity_dir / "chain.pem").read_bytes())


def attested_signing_mod(message: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
    """ClientApp mod: sign every reply with this collaborator's attested key. Not attested (Flower's simulation engine,
    a plain SuperNode): replies go unsigned, said once in the log; an attested aggregator would not count them."""
    if not is_attested(context):
        not_attested("attested_signing_mod", "replies are not signed")
        return call_next(message, context)
    return signing_mod(_signer(identity_dir_for(context)))(message, context, call_next)


def verify_reply(reply: Any, verifier: UpdateVerifier) -> str:
    """The member who signed ``reply``, or :class:`UpdateRejectedError`."""
    if reply.has_error():
        raise UpdateRejectedError("the reply is an error")
    record = reply.content.get(SIGNATURE_RECORD) if SIGNATURE_RECORD in reply.content else None
    if record is None:
        raise UpdateRejectedError("the reply is not signed (no attested member sent it)")
    signature, certificate = record.get("signature"), record.get("certificate")
    if not isinstance(signature, bytes) or not isinstance(certificate, str):
        raise UpdateRejectedError("the reply's signature record is malformed")
    digest = _signed_object_id(reply.content)
    meta = reply.metadata
    return verifier.verify_reply(
        certificate.encode(), signature, int(meta.run_id), str(meta.group_id), str(meta.message_type),
        str(meta.reply_to_message_id), digest,
    )  # fmt: skip


def check_reply_round(reply: Any, run_id: int, server_round: int) -> None:
    """:class:`UpdateRejectedError` unless ``reply`` answers round ``server_round`` of run ``run_id``. Only
    meaningful after :func:`verify_reply`: the run and the round (group id) are what the signature covers."""
    meta = reply.metadata
    if int(meta.run_id) != run_id:
        raise UpdateRejectedError(f"the reply was signed for run {meta.run_id}, not this run ({run_id})")
    if str(meta.group_id) != round_group(server_round):
        raise UpdateRejectedError(f"the reply was signed for round {meta.group_id or '(none)'!r}, not round {server_round}")


def round_group(server_round: int) -> str:
    """The group id of the messages of ``server_round`` (what the attested strategy sets and checks)."""
    return str(server_round)


def keep_attested(replies: Iterable[Any], verifier: UpdateVerifier) -> list[Any]:
    """The replies signed by attested members; every other is dropped and logged with the reason."""
    kept = []
    for reply in replies:
        try:
            member = verify_reply(reply, verifier)
        except UpdateRejectedError as exc:
            log.warning("dropped an update from node %s: %s", reply.metadata.src_node_id, exc)
            continue
        log.info("accepted the update of %s (node %s)", member, reply.metadata.src_node_id)
        kept.append(reply)
    return kept


class SignedClientApp:
    """A loaded ClientApp whose every successful reply is signed with this collaborator's attested key, whatever
    mods the app itself declares: what the SuperNode side runs, so an app without :func:`attested_signing_mod`
    still sends updates the ServerApp accepts. A reply the app's own mod signed already is left as it is: a
    signature record the app made up instead only gets its own update refused by the ServerApp."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, message: Any, context: Any) -> Any:
        reply = self.app(message=message, context=context)
        if reply.has_error() or SIGNATURE_RECORD in reply.content:
            return reply  # an error, or signed by the app's own attested_signing_mod: not signed twice (it costs)
        return attested_signing_mod(message, context, lambda _m, _c: reply)


def enforce_reply_signing() -> Callable[[], None]:
    """In a ``flwr-clientapp`` process: wrap every ClientApp Flower loads in :class:`SignedClientApp`. Returns a
    function that undoes it. Tied to Flower 1.42 (pinned): ``run_clientapp`` loads the app through
    ``get_load_client_app_fn``; a test fails if that moves."""
    import importlib  # noqa: PLC0415

    runtime = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    original: Callable[..., Callable[..., Any]] = getattr(runtime, "get_load_client_app_fn")  # noqa: B009

    def get_load_client_app_fn(*args: Any, **kwargs: Any) -> Callable[..., Any]:
        load = original(*args, **kwargs)
        return lambda *a, **k: SignedClientApp(load(*a, **k))

    setattr(runtime, "get_load_client_app_fn", get_load_client_app_fn)  # noqa: B010 - Flower's module attribute

    def undo() -> None:
        setattr(runtime, "get_load_client_app_fn", original)  # noqa: B010

    return undo
