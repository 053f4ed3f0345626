"""The enclave side of activation: verify the coordinator, then activate with it."""

from fedattest.participant.client import Activation, activate, resume, verify_coordinator

__all__ = ["Activation", "activate", "resume", "verify_coordinator"]
