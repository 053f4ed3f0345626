"""An append-only, RFC 6962 / RFC 9162 Merkle log with signed tree heads and receipts: the pure layer.

What each module does (none does I/O; storage, clocks and networking belong to the caller):

- :mod:`~fedattest.translog.hashing`: RFC 6962 §2.1 hashes (leaf, node, the empty tree, MTH).
- :mod:`~fedattest.translog.log`: :class:`MerkleLog`, an in-memory log that appends leaves and makes roots,
  inclusion proofs and consistency proofs.
- :mod:`~fedattest.translog.verify`: the RFC 9162 §2.1.3.2 and §2.1.4.2 verifiers a phone runs.
- :mod:`~fedattest.translog.treehead`: the signed tree head (STH), its wire format, signing and checking.
- :mod:`~fedattest.translog.receipt`: the receipt an upload gets back, and the checks of receipts and of two STHs.
- :mod:`~fedattest.translog.refusal`: :class:`TranslogError` and the names of the steps that refuse.

The protocol, wire formats and test vectors are described in docs/translog.md.
"""

from __future__ import annotations
