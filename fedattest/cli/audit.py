"""``fedattest audit export|verify``: fetch a coordinator's audit bundle, and check a bundle or a log offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError, print_json, read_input
from fedattest.coordinator import bundle
from fedattest.coordinator.audit import (
    AuditError,
    check_extends,
    export_head,
    import_log,
    import_pinned_head,
    public_key_from_pem,
    verify_log,
)
from fedattest.coordinator.bundle import BundleError, build_bundle, verify_bundle
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.files import atomic_write

app = typer.Typer(
    name="audit",
    help=(
        "Export a coordinator's audit bundle and check it (or a bare audit log) offline.\n\n"
        "Example: fedattest audit export --coordinator https://coord:8443 --root-ca root.pem -o bundle.tar\n\n"
        "         fedattest audit verify bundle.tar --key audit-key.pub.pem"
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command(
    "verify",
    help=(
        "Verify an exported audit log: every entry chains to the one before it and the last one is the head the"
        " coordinator signed. Pin the coordinator's key with --key (without it, the key inside the file is"
        " used, which only proves the log is self-consistent, and the output says so).\n\n"
        "With --since HEAD (a log or head saved earlier, e.g. by --save-head), also check that this log extends that"
        " signed head: the same key, the entry at its seq has its hash, and the log is not shorter. A fork or a"
        " rollback exits 1 naming the seq.\n\n"
        "Exit codes: 0 the log verifies, 1 it does not (the first bad entry is named; for a bundle: a check"
        " fails, or the bundle breaks its format or limits), 2 unreadable input.\n\n"
        "Example: fedattest audit verify audit.json --key coordinator.pub.pem --since head.json --save-head head.json"
    ),
)
def verify(  # noqa: PLR0917 - typer maps parameters to options
    log: Annotated[Path, typer.Argument(metavar="BUNDLE|LOG", help="Audit bundle (.tar) or log (JSON).", show_default=False)],
    key: Annotated[Path | None, typer.Option("--key", metavar="PEM", help="The coordinator's audit public key.")] = None,
    platform: Annotated[
        Path | None,
        typer.Option(
            "--platform",
            metavar="DIR",
            help="Accept simulated evidence under this simulated platform's root (only its public platform.json and"
            " root_ca.pem are read).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    since: Annotated[
        Path | None,
        typer.Option("--since", metavar="HEAD", help="A signed head saved earlier (head or log JSON): the log must extend it."),
    ] = None,
    save_head: Annotated[
        Path | None,
        typer.Option("--save-head", metavar="FILE", help="After a successful check, save this log's signed head to pin."),
    ] = None,
) -> None:
    if (since is not None or save_head is not None) and str(log) != "-" and _is_tar(log):
        raise CliUsageError("--since and --save-head take an exported log (JSON), not a bundle")
    if str(log) != "-" and _is_tar(log):
        # A bundle may be much larger than any other input: stream it from the file (the bundle reader
        # bounds what it reads), instead of reading it whole with read_input's cap.
        try:
            with log.open("rb") as fh:
                if (size := os.fstat(fh.fileno()).st_size) > bundle.MAX_ARCHIVE_BYTES:
                    raise CliError(f"{log}: {size} bytes, over the bundle limit of {bundle.MAX_ARCHIVE_BYTES}", EXIT_REJECTED)
                _verify_bundle(log, fh, key, platform, json_out)
        except OSError as exc:
            raise CliUsageError(f"cannot read audit bundle {str(log)!r}: {exc.strerror or exc}") from None
        return
    data = read_input(str(log), "audit bundle or log")
    if data[257:262] == b"ustar":
        if since is not None or save_head is not None:
            raise CliUsageError("--since and --save-head take an exported log (JSON), not a bundle")
        _verify_bundle(log, data, key, platform, json_out)
        return
    try:
        entries, head, embedded = import_log(data)
        pinned = public_key_from_pem(read_input(str(key), "key file")) if key is not None else None
    except AuditError as exc:
        raise CliUsageError(f"{log}: {exc}") from None
    try:
        earlier = import_pinned_head(read_input(str(since), "pinned head")) if since is not None else None
    except AuditError as exc:
        raise CliUsageError(f"{since}: {exc}") from None
    try:
        count = verify_log(entries, head, pinned or embedded)
        if earlier is not None:
            check_extends(entries, pinned or embedded, *earlier)
    except AuditError as exc:
        if json_out:
            print_json({"ok": False, "reason": str(exc), "seq": exc.seq})
        raise CliError(f"{log}: {exc}", EXIT_REJECTED) from None
    if save_head is not None:
        atomic_write(save_head, export_head(head, pinned or embedded), mode=0o644)
    if json_out:
        result = {"ok": True, "entries": count, "head": head.hash.hex(), "key_pinned": pinned is not None}
        print_json(result if earlier is None else {**result, "extends_seq": earlier[0].seq})
        return
    print(f"OK: {count} entries chain to the signed head {head.hash.hex()}")
    if earlier is not None:
        print(f"OK: the log extends the pinned head (seq {earlier[0].seq}) signed by the same key")
    if pinned is None:
        print("note: verified with the key inside the log; pass --key to check it is the coordinator's")


def _is_tar(path: Path) -> bool:
    """Whether ``path`` starts like a tar archive (ustar magic in the first header); False if unreadable
    (read_input then reports why)."""
    try:
        with path.open("rb") as fh:
            return fh.read(512)[257:262] == b"ustar"
    except OSError:
        return False


def _verify_bundle(path: Path, data: bytes | BinaryIO, key: Path | None, platform: Path | None, json_out: bool) -> None:
    from fedattest.tee.simulated import trust_root  # noqa: PLC0415

    try:
        pinned = public_key_from_pem(read_input(str(key), "key file")) if key is not None else None
        sim_root = trust_root(platform) if platform is not None else None
    except FedattestError as exc:
        raise CliUsageError(str(exc)) from None

    def verifier_for(simulated: bool) -> QuoteVerifier:
        if not simulated:
            return QuoteVerifier()  # Intel's SGX root
        if sim_root is None:
            raise FedattestError("simulated evidence: give --platform DIR to check it against that simulated root")
        return QuoteVerifier(sim_root)

    try:
        report = verify_bundle(data, verifier_for=verifier_for, audit_key=pinned)
    except BundleError as exc:  # examined and refused: not a bundle this verifier accepts
        raise CliError(f"{path}: {exc}", EXIT_REJECTED) from None
    if json_out:
        print_json({
            "ok": report.ok, "key_pinned": pinned is not None,
            "checks": [{"subject": c.subject, "ok": c.ok, "detail": c.detail} for c in report.checks],
            "activations": report.activations, "rounds": report.rounds,
        })  # fmt: skip
    else:
        for c in report.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.subject}: {c.detail}")
        failed = sum(not c.ok for c in report.checks)
        print(f"{'OK' if report.ok else 'REJECTED'}: {len(report.checks) - failed} of {len(report.checks)} checks pass;"
              f" {len(report.activations)} activations, {len(report.rounds)} rounds")  # fmt: skip
        if pinned is None:
            print("note: verified with the key inside the log; pass --key to check it is the coordinator's")
    if not report.ok:
        raise typer.Exit(EXIT_REJECTED)


@app.command(
    "export",
    help=(
        "Fetch the coordinator's audit bundle (log, policies and approvals, every activation's certificate, token,"
        " quote, claims and collateral, the round reports) into one tar file, for 'audit verify'.\n\n"
        "Example: fedattest audit export --coordinator https://coord:8443 --root-ca root.pem -o bundle.tar"
    ),
)
def export(
    coordinator: Annotated[str, typer.Option("--coordinator", metavar="URL", help="https://HOST:PORT")],
    root_ca: Annotated[Path, typer.Option("--root-ca", metavar="PEM", help="Root CA pinned by 'coordinator verify'.")],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Where to write the bundle (.tar).")],
) -> None:
    import httpx  # noqa: PLC0415

    from fedattest.participant.client import coordinator_context  # noqa: PLC0415

    try:
        context = coordinator_context(read_input(str(root_ca), "root CA").decode())
    except (ValueError, OSError) as exc:
        raise CliUsageError(f"{root_ca}: not a PEM certificate ({exc})") from None
    try:
        with httpx.Client(verify=context, timeout=60) as http:
            log_response = http.get(f"{coordinator}/api/v1/audit")
            evidence_response = http.get(f"{coordinator}/api/v1/audit/evidence")
    except httpx.HTTPError as exc:
        raise CliError(f"{coordinator}: {exc}", EXIT_REJECTED) from None
    for response in (log_response, evidence_response):
        if response.status_code != 200:
            raise CliError(f"{response.request.url}: HTTP {response.status_code}", EXIT_REJECTED)
    bundle = build_bundle(log_response.content, evidence_response.json())
    atomic_write(output, bundle, mode=0o644)
    print(f"wrote {output} ({len(bundle)} bytes)")
