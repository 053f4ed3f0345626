"""The simulated enclave image of a workload, and its MRENCLAVE.

Real Gramine enclaves measure the loader, the LibOS and the manifest; the simulated TEE has no enclave
binary, so it measures the next best thing with the real SGX algorithm (ECREATE, EADD, EEXTEND): the
canonical manifest (which pins every trusted file by hash) and the layout the manifest implies. The
layout, from offset 0:

1. the canonical manifest, zero-padded to whole 4 KiB pages: regular pages, read-only, measured;
2. per thread (``sgx.max_threads``): a TCS page (its OSSA field points at the next page) and one SSA
   page (read-write, zero), both measured;
3. the rest of ``sgx.enclave_size``: heap pages, read-write, added but not measured (EADD only), as
   enclaves add their zeroed heap.

Anyone holding the manifest and the trusted files (or just their hashes) gets the same MRENCLAVE.
"""

from __future__ import annotations

import struct

from fedattest.sgx.mrenclave import Measurement
from fedattest.workload.manifest import Manifest, ManifestError

PAGE = 4096
SSA_FRAME_PAGES = 1
# SECINFO.FLAGS: R=bit 0, W=bit 1, X=bit 2; page type in bits 8-15 (PT_TCS = 1, PT_REG = 2).
SECINFO_R = 0x1
SECINFO_W = 0x2
PT_TCS = 1 << 8
PT_REG = 2 << 8


def _tcs_page(ossa: int) -> bytes:
    # TCS layout (SDM Vol. 3D 37.8): reserved u64, FLAGS u64, OSSA u64, CSSA u32, NSSA u32, OENTRY u64,
    # AEP u64, OFSBASE u64, OGSBASE u64, FSLIMIT u32, GSLIMIT u32; the rest of the page is zero.
    header = struct.pack("<QQQIIQQQQII", 0, 0, ossa, 0, SSA_FRAME_PAGES, 0, 0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF)
    return header + bytes(PAGE - len(header))


def mrenclave(manifest: Manifest, canonical: bytes) -> bytes:
    """MRENCLAVE of the simulated enclave for ``manifest`` whose canonical form is ``canonical``."""
    manifest_pages = -(-len(canonical) // PAGE) or 1
    needed = manifest_pages + 2 * manifest.max_threads
    if needed * PAGE > manifest.enclave_size:
        raise ManifestError(
            f"sgx.enclave_size: {manifest.enclave_size} bytes cannot hold the manifest and {manifest.max_threads} threads"
        )
    m = Measurement(ssa_frame_size=SSA_FRAME_PAGES, enclave_size=manifest.enclave_size)
    padded = canonical + bytes(manifest_pages * PAGE - len(canonical))
    offset = 0
    for i in range(manifest_pages):
        m.add_page(offset, PT_REG | SECINFO_R, padded[i * PAGE : (i + 1) * PAGE])
        offset += PAGE
    for _ in range(manifest.max_threads):
        m.add_page(offset, PT_TCS, _tcs_page(offset + PAGE))
        m.add_page(offset + PAGE, PT_REG | SECINFO_R | SECINFO_W, bytes(PAGE))
        offset += 2 * PAGE
    while offset < manifest.enclave_size:
        m.add_page(offset, PT_REG | SECINFO_R | SECINFO_W, None)
        offset += PAGE
    return m.digest()
