"""What every TEE backend offers, and the identity a simulated enclave quotes as."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedattest.errors import TeeError
from fedattest.sgx.quote import SGX_FLAGS_DEBUG, SGX_FLAGS_KSS, SGX_FLAGS_MODE64BIT, make_attributes

REPORT_DATA_SIZE = 64
SGX_FLAGS_INITTED = 0x01
# x87 and SSE state: the XFRM every SGX enclave has; Gramine enclaves usually add AVX (0xE7 in total).
DEFAULT_XFRM = 0x03


@runtime_checkable
class TEE(Protocol):
    """A trusted execution environment that can produce DCAP quotes.

    ``quote`` binds exactly 64 bytes of caller data (normally a hash of the keys and claims the enclave
    wants to prove it owns) into a DCAP quote, returned as raw bytes.
    """

    @property
    def kind(self) -> str:
        """``"sgx-simulated"`` or ``"sgx-gramine"``: for logs and verdicts."""
        ...

    @property
    def simulated(self) -> bool:
        """True when the evidence is not rooted in Intel hardware."""
        ...

    def quote(self, report_data: bytes) -> bytes: ...

    def sealing_key(self) -> bytes:
        """The 32-byte key that seals data for this enclave only (MRENCLAVE policy; see fedattest.tee.sealing)."""
        ...


def check_report_data(report_data: bytes) -> bytes:
    """Report data is exactly 64 bytes; shorter data is refused rather than padded, so a caller never
    believes a value was bound that was not."""
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise TeeError(f"report data must be bytes, not {type(report_data).__name__}")
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise TeeError(f"report data must be exactly {REPORT_DATA_SIZE} bytes, got {len(data)} (hash longer data first)")
    return data


def _sized(value: bytes, size: int, name: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        got = len(value) if isinstance(value, bytes) else type(value).__name__
        raise TeeError(f"workload identity: {name} must be {size} bytes, got {got}")


def _u(value: int, bits: int, name: str) -> None:
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise TeeError(f"workload identity: {name} must be an integer in 0..{(1 << bits) - 1}, got {value!r}")


@dataclass(frozen=True)
class WorkloadIdentity:
    """The measured identity of an SGX enclave: what its report body says about the code it runs.

    In a real enclave these values come from the hardware (MRENCLAVE from the loaded pages, MRSIGNER
    from the SIGSTRUCT key); a simulated enclave is told them.
    """

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int = 0
    isv_svn: int = 0
    debug: bool = False
    misc_select: int = 0
    xfrm: int = DEFAULT_XFRM
    config_id: bytes = bytes(64)
    config_svn: int = 0
    isv_ext_prod_id: bytes = bytes(16)
    isv_family_id: bytes = bytes(16)
    # SGX Key Separation and Sharing: ATTRIBUTES.KSS set. Only such an enclave has a CONFIGID, CONFIGSVN,
    # ISVEXTPRODID or ISVFAMILYID (the CPU refuses to create one that asks for them otherwise).
    kss: bool = False

    def __post_init__(self) -> None:
        _sized(self.mr_enclave, 32, "mr_enclave")
        _sized(self.mr_signer, 32, "mr_signer")
        _sized(self.config_id, 64, "config_id")
        _sized(self.isv_ext_prod_id, 16, "isv_ext_prod_id")
        _sized(self.isv_family_id, 16, "isv_family_id")
        _u(self.isv_prod_id, 16, "isv_prod_id")
        _u(self.isv_svn, 16, "isv_svn")
        _u(self.config_svn, 16, "config_svn")
        _u(self.misc_select, 32, "misc_select")
        _u(self.xfrm, 64, "xfrm")
        if not self.kss and (any(self.config_id) or self.config_svn or any(self.isv_ext_prod_id) or any(self.isv_family_id)):
            raise TeeError(
                "workload identity: CONFIGID, CONFIGSVN, ISVEXTPRODID and ISVFAMILYID need KSS (sgx.kss = true in the"
                " manifest): SGX does not create an enclave that asks for them without it"
            )

    @property
    def attributes(self) -> bytes:
        """ATTRIBUTES as the report carries them: INIT and MODE64BIT set, DEBUG when ``debug``, KSS when ``kss``."""
        flags = SGX_FLAGS_INITTED | SGX_FLAGS_MODE64BIT
        flags |= (SGX_FLAGS_DEBUG if self.debug else 0) | (SGX_FLAGS_KSS if self.kss else 0)
        return make_attributes(flags, self.xfrm)
