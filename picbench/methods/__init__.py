"""Generation methods by name. Built-ins and the baseline adapters are registered here; other
packages add methods through the ``picbench.methods`` entry-point group."""

from __future__ import annotations

from picbench.methods.base import Capabilities, Method
from picbench.registry import Registry

METHODS: Registry[type[Method]] = Registry("method", entry_point_group="picbench.methods")

__all__ = ["METHODS", "Capabilities", "Method"]
