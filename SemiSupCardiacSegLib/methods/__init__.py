"""Semi-supervised methods, selectable by name (``get_method``); importing registers them."""

from . import dtc, dtml, mtctl, mtn, sassnet, supervised, uamt  # noqa: F401  (registration)
from .base import METHODS, Method, OptimizerStep, StepOutput, get_method, register

__all__ = ["METHODS", "Method", "OptimizerStep", "StepOutput", "get_method", "register"]
