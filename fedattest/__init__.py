"""fedattest: attestation and data integrity for federated learning on Intel SGX enclaves."""

__version__ = "0.1.0"
