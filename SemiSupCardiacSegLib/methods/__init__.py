"""Semi-supervised methods, selectable by name (``get_method``); importing registers them."""

from .base import METHODS, Method, get_method, register
from . import dtc, dtml, mtctl, mtn, sassnet, supervised, uamt  # noqa: F401  (registration)

__all__ = ["METHODS", "Method", "get_method", "register"]
