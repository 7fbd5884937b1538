"""picbench: benchmark and reference implementation for position-controlled, identity-preserving
multi-subject image customization.

Dependencies point inwards: cli -> runner -> (benches, methods, metrics, store) -> records.
"""

__version__ = "0.1.0"
