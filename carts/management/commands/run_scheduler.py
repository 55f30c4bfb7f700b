"""``manage.py run_scheduler``: the periodic-job scheduler (see carts.scheduler)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from carts import scheduler

log = logging.getLogger("carts.scheduler")


class Command(BaseCommand):
    help = (
        "Run the scheduler: writes the scheduler heartbeat and runs registered periodic jobs. "
        "Run as many as you like; one is active, the others stand by. Stops on SIGINT/SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--lock-ttl",
            type=float,
            default=scheduler.LOCK_TTL,
            help="Seconds before a crashed instance's lock expires and a standby takes over.",
        )
        parser.add_argument(
            "--tick", type=float, default=scheduler.TICK, help="Seconds between loop turns."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            runner = scheduler.Scheduler(
                conn=scheduler.client(),
                jobs=scheduler.registered(),
                lock_ttl=options["lock_ttl"],
                tick=options["tick"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            log.info("%s received; stopping", signal.Signals(signum).name)
            stop.set()

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            runner.run(stop)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
