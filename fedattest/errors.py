"""The fedattest error hierarchy.

Every failure a user can cause raises a subclass of :class:`FedattestError` whose message says what
was wrong (and, where it helps, what to do). The CLI prints the message on one line and exits
non-zero; nothing else should escape to a user.
"""

from __future__ import annotations

from fedattest.steps import Step


class FedattestError(Exception):
    """Base class of every error fedattest raises on purpose."""


class FormatError(FedattestError):
    """A binary or textual structure could not be parsed.

    ``field`` names the structure and field that was bad (e.g. ``"quote.header.version"``).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}")


class UnsupportedFormatError(FormatError):
    """A well-formed structure of a kind fedattest does not support (e.g. certification data type 3)."""


class VerificationError(FedattestError):
    """Evidence failed verification.

    ``step`` names the verification step that failed (a :class:`~fedattest.steps.Step`, e.g.
    ``Step.PCK_CHAIN``), so callers and logs can tell failures apart without parsing messages. A name
    that is not a step is a programming error (``ValueError``), caught by the tests, not by users.
    """

    def __init__(self, step: Step | str, message: str) -> None:
        self.step = Step(step)
        self.detail = message
        super().__init__(f"{step}: {message}")


class CollateralError(FedattestError):
    """Collateral could not be read, fetched or parsed."""


class TeeError(FedattestError):
    """A TEE (simulated or Gramine) could not produce evidence."""
