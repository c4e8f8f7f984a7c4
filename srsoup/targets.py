"""The object a config's ``_target_`` names (``module.attr`` or ``module.Class.attr``), with a one-line error."""

from __future__ import annotations

import importlib


def locate(path: str):
    """Import the longest module prefix of ``path`` and walk the rest as attributes.

    Raises ImportError whose message is one line: the exception type and its first line.
    """
    parts = str(path).split(".")
    error: Exception | None = None
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            if err.name is None or not ".".join(parts[:cut]).startswith(err.name):
                error = err  # the module exists but imports something missing: report that
                break
            error = err
            continue
        except Exception as err:  # noqa: BLE001 - any failure while importing the user's module
            error = err
            break
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError as err:
            error = err
            break
        return obj
    first = str(error).strip().splitlines()[0] if error and str(error).strip() else ""
    raise ImportError(f"{type(error).__name__}: {first}" if error else f"cannot import {path!r}")
