"""Import an optional dependency of the demo data, or say in one line how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import DataError, install_hint


def require(module: str, package: str) -> ModuleType:
    """``import module``; a :class:`DataError` naming ``package`` and the ``demo`` extra if missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"the demo data needs {package}: {install_hint('demo')}") from None
