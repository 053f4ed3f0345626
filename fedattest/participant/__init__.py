"""The enclave side of activation: verify the coordinator, then activate with it."""

from fedattest.participant.client import Activation, activate, verify_coordinator

__all__ = ["Activation", "activate", "verify_coordinator"]
