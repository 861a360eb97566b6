"""The methods ``palora compare`` puts side by side (see :mod:`palora.methods.registry`)."""

from .build import Built, build_method, merged
from .registry import METHODS, MethodSpec

__all__ = ["METHODS", "Built", "MethodSpec", "build_method", "merged"]
