"""The user enclave (issue 14): an attested workload per user that keeps that user's uploads.

- :mod:`~fedattest.userenclave.store`: :class:`UserStore`, the record store: every record sealed to the
  enclave's measurement in its own file, an RFC 6962 log over them (:mod:`fedattest.translog`) whose signed
  tree head is sealed next to them, a receipt per upload, and the checks a resumed enclave runs on its
  directory.
- :mod:`~fedattest.userenclave.sealed_files`: the directory's file names, sealing purposes and bounded reads.
- :mod:`~fedattest.userenclave.refusal`: :class:`UserStoreError` and the reasons it names.

No networking and no service here yet: the storage layer they will sit on (docs/user-enclave.md).
"""

from __future__ import annotations
