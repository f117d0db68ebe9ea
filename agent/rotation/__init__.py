"""Automatic secret rotation: rotators (how a value changes) and the engine that runs them."""

from agent.rotation.rotators import RotationError, Rotator, SecretRef, build_rotator

__all__ = ["RotationError", "Rotator", "SecretRef", "build_rotator"]
