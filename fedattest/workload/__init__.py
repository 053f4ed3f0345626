"""Workloads: manifests, their canonical form and measurement (MRENCLAVE, MRSIGNER), the simulated enclave
image, and Gramine manifest templates."""
