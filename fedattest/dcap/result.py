"""What DCAP verification produces: TCB statuses and the verified quote."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from fedattest.sgx.quote import Quote, ReportBody, TdReport


class TcbStatus(StrEnum):
    """Intel's TCB status names, as they appear in TCB info and QE identity JSON."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote whose signatures, certificate chains and collateral all verified.

    ``tcb_status`` is the platform status merged with the QE (and, for TDX, the TDX module) status, as
    Intel's QVL merges them; a ``Revoked`` TCB level is reported here, not raised, so that appraisal
    decides. ``simulated`` is true when the trust root is not Intel's SGX Root CA. ``collateral_expiry``
    is the earliest moment at which any piece of collateral or certificate used stops being valid.
    """

    quote: Quote
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_tcb_status: TcbStatus
    qe_tcb_status: TcbStatus
    tcb_date: datetime | None
    fmspc: bytes
    pceid: bytes
    ppid: bytes
    collateral_expiry: datetime
    simulated: bool
    trust_root_sha256: bytes

    @property
    def tee(self) -> str:
        return self.quote.tee

    @property
    def report(self) -> ReportBody | TdReport:
        return self.quote.body

    @property
    def sgx_report(self) -> ReportBody | None:
        return self.quote.body if isinstance(self.quote.body, ReportBody) else None

    @property
    def report_data(self) -> bytes:
        return self.quote.body.report_data

    @property
    def debug(self) -> bool:
        return self.quote.body.debug

    @property
    def mr_enclave(self) -> bytes | None:
        r = self.sgx_report
        return r.mr_enclave if r else None

    @property
    def mr_signer(self) -> bytes | None:
        r = self.sgx_report
        return r.mr_signer if r else None

    @property
    def isv_prod_id(self) -> int | None:
        r = self.sgx_report
        return r.isv_prod_id if r else None

    @property
    def isv_svn(self) -> int | None:
        r = self.sgx_report
        return r.isv_svn if r else None

    @property
    def mr_td(self) -> bytes | None:
        b = self.quote.body
        return b.mr_td if isinstance(b, TdReport) else None

    def enclave_identity(self) -> dict[str, str]:
        """What makes this the same enclave (or TD) as another quote's: for SGX the code (MRENCLAVE), its signer,
        product and security version, the launch configuration (CONFIGID, CONFIGSVN) and the attributes; for a
        TD its measurement, configuration, owner and attributes. Hex strings, for records and comparison."""
        b = self.quote.body
        if isinstance(b, ReportBody):
            return {
                "tee": "sgx", "mrenclave": b.mr_enclave.hex(), "mrsigner": b.mr_signer.hex(), "isv_prod_id": str(b.isv_prod_id),
                "isv_svn": str(b.isv_svn), "config_id": b.config_id.hex(), "config_svn": str(b.config_svn),
                "attributes": b.attributes.hex(),
            }  # fmt: skip
        return {
            "tee": "tdx", "mrtd": b.mr_td.hex(), "mrconfigid": b.mr_config_id.hex(), "mrowner": b.mr_owner.hex(),
            "mrownerconfig": b.mr_owner_config.hex(), "td_attributes": b.td_attributes.hex(),
        }  # fmt: skip
