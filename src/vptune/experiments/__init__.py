"""Experiments built on training: the demo (linear probe vs VPT-shallow vs VPT-deep)."""
from .demo import run_demo

__all__ = ["run_demo"]
