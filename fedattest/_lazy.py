"""Package attributes imported on first use (PEP 562), for packages whose names pull in heavy modules
that a short-lived process (a Flower ClientApp starts for every message) mostly does not need."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``name`` from ``package.<where[name]>`` (or from
    ``where[name]`` itself when it is a dotted module name) on first use and keeps it in the package's
    namespace, so the next lookup is an ordinary one."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - it is installed as a module's __getattr__
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = where[name] if "." in where[name] else f"{package}.{where[name]}"  # a dotted name is absolute
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
