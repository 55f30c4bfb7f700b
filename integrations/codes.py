"""Placeholder: filled in by its owner."""


def register() -> None:
    pass
