"""What a simulated platform is (its TCB, its quoting enclave) and the collateral Intel would publish
for it, per scenario. Pure data and JSON; signing and files live in :mod:`fedattest.tee.simulated`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from hashlib import sha256
from typing import Any

# The simulated platform's TCB: SGX TCB components 1-16 (= its CPUSVN) and PCESVN. Values in the range
# real Ice Lake servers report, so TCB evaluation exercises non-trivial comparisons.
PLATFORM_TCB_COMPONENTS = (14, 14, 3, 3, 255, 255, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0)
PLATFORM_PCESVN = 13
PCEID = bytes.fromhex("0000")
FMSPC = bytes.fromhex("00606A000000")
TCB_EVALUATION_DATA_NUMBER = 17

# The simulated quoting enclave. Its MRSIGNER is our own, not Intel's: nothing about the simulated QE
# should be mistakable for Intel's.
QE_MRSIGNER = sha256(b"fedattest simulated quoting enclave signer").digest()
QE_MRENCLAVE = sha256(b"fedattest simulated quoting enclave").digest()
QE_ISV_PROD_ID = 1
QE_ISV_SVN = 8
QE_MISCSELECT = 0
QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")  # INIT | PROVISIONKEY, no DEBUG
QE_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")

ADVISORY_SW_HARDENING = "INTEL-SA-00615"
ADVISORY_OUT_OF_DATE = "INTEL-SA-00960"
ADVISORY_QE_OUT_OF_DATE = "INTEL-SA-00656"
ADVISORY_ANCIENT = "INTEL-SA-00106"


class Scenario(StrEnum):
    """Which TCB story the simulated platform's collateral tells (chosen once, at ``sim init``)."""

    UP_TO_DATE = "up-to-date"
    SW_HARDENING_NEEDED = "sw-hardening-needed"
    OUT_OF_DATE = "out-of-date"
    QE_OUT_OF_DATE = "qe-out-of-date"
    REVOKED_PCK = "revoked-pck"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Scenario.UP_TO_DATE: "platform and QE at the latest TCB: status UpToDate",
    Scenario.SW_HARDENING_NEEDED: f"latest TCB, but software mitigations needed: SWHardeningNeeded ({ADVISORY_SW_HARDENING})",
    Scenario.OUT_OF_DATE: f"a newer platform TCB exists: OutOfDate ({ADVISORY_OUT_OF_DATE})",
    Scenario.QE_OUT_OF_DATE: f"the quoting enclave is behind: OutOfDate ({ADVISORY_QE_OUT_OF_DATE})",
    Scenario.REVOKED_PCK: "the PCK certificate is on the PCK CRL: verification fails at the revocation step",
}


@dataclass(frozen=True)
class _Level:
    components: tuple[int, ...]
    pcesvn: int
    status: str
    date: str
    advisories: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        level: dict[str, Any] = {
            "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in self.components], "pcesvn": self.pcesvn},
            "tcbDate": self.date,
            "tcbStatus": self.status,
        }
        if self.advisories:
            level["advisoryIDs"] = list(self.advisories)
        return level


def _newer(components: tuple[int, ...]) -> tuple[int, ...]:
    """A TCB one microcode step ahead of ``components`` (components 1 and 2 are the CPU microcode SVNs)."""
    return (components[0] + 1, components[1] + 1, *components[2:])


def _platform_levels(scenario: Scenario) -> list[_Level]:
    here = PLATFORM_TCB_COMPONENTS
    ancient = _Level((0,) * 16, 5, "OutOfDate", "2018-01-04T00:00:00Z", (ADVISORY_ANCIENT,))
    if scenario is Scenario.SW_HARDENING_NEEDED:
        top = [_Level(here, PLATFORM_PCESVN, "SWHardeningNeeded", "2024-03-13T00:00:00Z", (ADVISORY_SW_HARDENING,))]
    elif scenario is Scenario.OUT_OF_DATE:
        top = [
            _Level(_newer(here), PLATFORM_PCESVN, "UpToDate", "2024-08-14T00:00:00Z"),
            _Level(here, PLATFORM_PCESVN, "OutOfDate", "2024-03-13T00:00:00Z", (ADVISORY_OUT_OF_DATE,)),
        ]
    else:
        top = [_Level(here, PLATFORM_PCESVN, "UpToDate", "2024-03-13T00:00:00Z")]
    return [*top, ancient]


def _qe_levels(scenario: Scenario) -> list[dict[str, Any]]:
    if scenario is Scenario.QE_OUT_OF_DATE:
        levels = [
            {"tcb": {"isvsvn": QE_ISV_SVN + 1}, "tcbDate": "2024-08-14T00:00:00Z", "tcbStatus": "UpToDate"},
            {
                "tcb": {"isvsvn": QE_ISV_SVN},
                "tcbDate": "2024-03-13T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": [ADVISORY_QE_OUT_OF_DATE],
            },
        ]
    else:
        levels = [{"tcb": {"isvsvn": QE_ISV_SVN}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}]
    levels.append(
        {"tcb": {"isvsvn": 2}, "tcbDate": "2019-05-15T00:00:00Z", "tcbStatus": "OutOfDate", "advisoryIDs": [ADVISORY_ANCIENT]}
    )
    return levels


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _compact(doc: dict[str, Any]) -> str:
    # Compact JSON, as Intel's PCS serves it; the signature covers exactly these bytes.
    return json.dumps(doc, separators=(",", ":"))


def tcb_info_text(scenario: Scenario, issue: datetime, next_update: datetime) -> str:
    """TCB info v3 (SGX) for the simulated platform's FMSPC, as the exact text that gets signed."""
    return _compact(
        {
            "id": "SGX",
            "version": 3,
            "issueDate": _time(issue),
            "nextUpdate": _time(next_update),
            "fmspc": FMSPC.hex().upper(),
            "pceId": PCEID.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "tcbLevels": [level.to_json() for level in _platform_levels(scenario)],
        }
    )


def qe_identity_text(scenario: Scenario, issue: datetime, next_update: datetime) -> str:
    """QE identity v2 for the simulated quoting enclave, as the exact text that gets signed."""
    return _compact(
        {
            "id": "QE",
            "version": 2,
            "issueDate": _time(issue),
            "nextUpdate": _time(next_update),
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "miscselect": f"{QE_MISCSELECT:08X}",
            "miscselectMask": "FFFFFFFF",
            "attributes": QE_ATTRIBUTES.hex().upper(),
            "attributesMask": QE_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": QE_MRSIGNER.hex().upper(),
            "isvprodid": QE_ISV_PROD_ID,
            "tcbLevels": _qe_levels(scenario),
        }
    )
