"""Quotes from a real SGX enclave under Gramine, through its ``/dev/attestation`` pseudo-filesystem.

Gramine's protocol (docs: "Attestation and Secret Provisioning"): write 64 bytes to
``user_report_data``, then read ``quote``; ``attestation_type`` says which kind of quote Gramine
makes ("dcap" for DCAP ECDSA quotes, "none" outside SGX or when remote attestation is off).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fedattest.errors import FormatError, TeeError
from fedattest.sgx.quote import Quote
from fedattest.tee.base import check_report_data

DEFAULT_ATTESTATION_DIR = Path("/dev/attestation")


class GramineTEE:
    """The enclave this process runs in, under Gramine (implements :class:`fedattest.tee.TEE`).

    ``attestation_dir`` is ``/dev/attestation`` inside Gramine; it can be pointed elsewhere for tests
    that replay Gramine's file protocol.
    """

    kind = "sgx-gramine"
    simulated = False

    # /dev/attestation is process-global state (write report data, then read the quote): two threads
    # interleaving would get each other's quotes.
    _lock = threading.Lock()

    def __init__(self, attestation_dir: Path | str = DEFAULT_ATTESTATION_DIR) -> None:
        self.attestation_dir = Path(attestation_dir)
        kind_file = self.attestation_dir / "attestation_type"
        try:
            kind = kind_file.read_text().strip()
        except FileNotFoundError:
            raise TeeError(
                f"{kind_file} not found: not running inside a Gramine SGX enclave (start the workload with gramine-sgx)"
            ) from None
        except OSError as exc:
            raise TeeError(f"{kind_file}: {exc.strerror or exc}") from None
        if kind != "dcap":
            raise TeeError(
                f"Gramine attestation type is {kind!r}, expected 'dcap': set sgx.remote_attestation = \"dcap\" in the manifest"
            )

    def sealing_key(self) -> bytes:
        from fedattest.tee.sealing import SealingError, derive_sealing_key  # noqa: PLC0415

        path = Path(self.attestation_dir) / "keys" / "_sgx_mrenclave"
        try:
            return derive_sealing_key(path.read_bytes(), b"gramine-mrenclave")
        except OSError as exc:
            raise SealingError(f"cannot read Gramine's sealing key {path}: {exc.strerror or exc}") from None

    def quote(self, report_data: bytes) -> bytes:
        report_data = check_report_data(report_data)
        with self._lock:
            try:
                fd = os.open(self.attestation_dir / "user_report_data", os.O_WRONLY)
                try:
                    written = os.write(fd, report_data)
                finally:
                    os.close(fd)
                if written != len(report_data):
                    raise TeeError(f"Gramine accepted {written} of 64 bytes of report data")
                quote = (self.attestation_dir / "quote").read_bytes()
            except OSError as exc:
                raise TeeError(f"Gramine /dev/attestation: {exc.strerror or exc} ({exc.filename})") from None
        try:
            parsed = Quote.parse(quote)
        except FormatError as exc:
            raise TeeError(f"Gramine returned a quote that does not parse: {exc}") from None
        if parsed.report_data != report_data:
            raise TeeError("Gramine returned a quote for different report data (another writer raced this one?)")
        return quote
