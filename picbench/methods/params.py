"""Declared types and ranges of method parameters, checked when a method is built, before any
model loads: ``--param steps=1e9`` or ``guidance=NaN`` is refused naming the parameter, instead
of allocating gigabytes or failing deep inside a pipeline.

A method states ``param_specs = {"steps": Param("int", 1, MAX_STEPS), ...}``; a parameter it does
not declare is checked against the type of its default (an int default takes integers, a float
default any finite number, a bool default true/false, a string default a string; a None default
takes anything).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from picbench.errors import PicbenchError

MAX_STEPS = 1000
"""Sampling steps within reason: every released method uses 12 to 50."""
MAX_GUIDANCE = 100.0
MAX_RESOLUTION = 4096

Kind = Literal["int", "float", "bool", "str", "any"]


class MethodParamError(PicbenchError, ValueError):
    """A method parameter has the wrong type or lies outside its range."""


@dataclass(frozen=True)
class Param:
    """One parameter's type, closed range [low, high] (numbers), allowed values, and whether
    None is allowed."""

    kind: Kind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    @classmethod
    def like(cls, default: Any) -> Param:
        """The spec a parameter without a declared one gets from its default value."""
        if default is None:
            return cls("any")
        if isinstance(default, bool):
            return cls("bool")
        if isinstance(default, int):
            return cls("int")
        if isinstance(default, float):
            return cls("float")
        if isinstance(default, str):
            return cls("str")
        return cls("any")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None."""
        if value is None:
            return None if self.optional or self.kind == "any" else f"must be {self._describe()}, got null"
        if self.kind == "bool" and not isinstance(value, bool):
            return f"must be true or false, got {value!r}"
        if self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"must be {self._describe()}, got {value!r}"
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be {self._describe()}, got {value!r}"
            if not math.isfinite(value):
                return f"must be a finite number, got {value!r}"
        if self.kind == "str" and not isinstance(value, str):
            return f"must be a string, got {value!r}"
        if self.kind in ("int", "float") and ((self.low is not None and value < self.low) or (self.high is not None and value > self.high)):
            return f"must be {self._describe()}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        return None

    def _describe(self) -> str:
        what = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string", "any": "a value"}[self.kind]
        if self.low is not None and self.high is not None:
            what += f" in [{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            what += f" >= {self.low:g}"
        elif self.high is not None:
            what += f" <= {self.high:g}"
        return what + (" or null" if self.optional else "")


STEPS = Param("int", 1, MAX_STEPS)
GUIDANCE = Param("float", 0.0, MAX_GUIDANCE)
RESOLUTION = Param("int", 8, MAX_RESOLUTION)


def check_params(method: str, params: Mapping[str, Any], defaults: Mapping[str, Any], specs: Mapping[str, Param]) -> None:
    """Raise :class:`MethodParamError` naming the first parameter that does not fit its spec."""
    for name, value in params.items():
        spec = specs.get(name) or Param.like(defaults.get(name))
        reason = spec.problem(value)
        if reason is not None:
            raise MethodParamError(f"method {method}: parameter {name!r} {reason}")
