"""Run a function in several threads, each on its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection


def run_in_threads(
    target: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, timeout: float = 60
) -> list[Any]:
    """Call ``target(*args[i])`` in thread i; return each result, or the exception it raised.

    Each thread closes its own Django connection when done, so none is left open (or idle in a
    transaction) after the test.
    """
    outcomes: list[Any] = [None] * len(args)

    def run(i: int) -> None:
        try:
            outcomes[i] = target(*args[i])
        except BaseException as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(args))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not stuck, f"threads {stuck} did not finish within {timeout} s"
    return outcomes


def raise_first_error(outcomes: Sequence[Any]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
