"""Errors of the recovery app."""

from __future__ import annotations


class TrainingError(Exception):
    """The log cannot train a model (too few carts, one class only, ...)."""


class ModelNotFound(Exception):
    pass
