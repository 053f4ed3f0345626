"""Editing a policy file as its authors wrote it (comments and layout kept): what ``policy add-app`` and the dev
loop change in a policy before it is approved again."""

from __future__ import annotations

from fedattest.errors import FedattestError
from fedattest.policy.federation import FederationPolicy, parse_policy


def with_app_hash(text: str, digest: str) -> tuple[str, FederationPolicy]:
    """``text`` with ``digest`` (64 lowercase hex digits) appended to ``[apps] allowed_hashes``, and the policy it
    parses to. :class:`FedattestError` if the list cannot be edited or the result does not check."""
    import tomlkit  # noqa: PLC0415 - style-preserving TOML, only here
    from tomlkit.exceptions import TOMLKitError  # noqa: PLC0415

    try:
        doc = tomlkit.parse(text)
        doc["apps"]["allowed_hashes"].append(digest)
        new_text = tomlkit.dumps(doc)
    except (TOMLKitError, KeyError, AttributeError, TypeError) as exc:
        raise FedattestError(f"cannot edit [apps] allowed_hashes: {exc}") from None
    try:
        return new_text, parse_policy(new_text)
    except FedattestError as exc:  # e.g. the file declares the list in a form we did not expect
        raise FedattestError(f"the edited policy does not check: {exc}") from None
