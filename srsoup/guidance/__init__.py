"""Guidance methods, one module each; a yaml in ``conf/guidance/`` names the class with ``_target_``.

``METHODS`` maps each method's ``name`` to its class, found by importing every module of this package, so a new
method is one file here plus one yaml and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from srsoup.guidance.base import Chains, Guidance, Plan


def _discover() -> dict[str, type[Guidance]]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Guidance]] = {}
    stack = list(Guidance.__subclasses__())
    while stack:
        cls = stack.pop(0)
        stack.extend(cls.__subclasses__())
        if cls.name and cls.__module__.startswith(__name__):
            found.setdefault(cls.name, cls)
    return found


METHODS: dict[str, type[Guidance]] = _discover()

__all__ = ["METHODS", "Chains", "Guidance", "Plan"]
