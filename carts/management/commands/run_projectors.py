from __future__ import annotations

import logging
import signal
import time
from typing import Any

import redis
from django import db
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from carts import projectors, redis_client
from carts.append import EVENTS_HINT_CHANNEL

log = logging.getLogger("carts.projectors")

# After a failed catch-up: wait 1 s, then twice as long after each further failure, up to 30 s.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


class Command(BaseCommand):
    help = (
        "Tail the event log and keep every registered projector up to date; several runners share "
        "the work through leases (carts/projectors.py)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll", type=float, default=1.0, help="Seconds between polls.")
        parser.add_argument("--once", action="store_true", help="Catch up once and exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            self.stdout.write(f"applied {projectors.projectors_catch_up_all()} events")
            return
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        def pause(seconds: float) -> None:
            """Sleep, in short steps so a stop signal is seen within half a second."""
            deadline = time.monotonic() + seconds
            while not stopping and time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        pubsub = None
        runner = projectors.ProjectorRunner()
        log.info("projectors running as %s: %s", runner.owner, ", ".join(projectors.REGISTRY))
        backoff = BACKOFF_FIRST
        while not stopping:
            if settings.CARTS_HINTS and pubsub is None:
                # Subscribed before each turn's reads: a hint sent while it reads is not lost.
                try:
                    pubsub = redis_client.client().pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(EVENTS_HINT_CHANNEL)
                except redis.RedisError:
                    log.warning("hint channel unavailable; polling")
                    pubsub = None
            try:
                applied = runner.step()
            except Exception:
                # Never exit (make run would lose the read models until a restart that fails the
                # same way): log, back off and try again, until it works or a signal stops us.
                log.exception("catching up failed; trying again in %.0f s", backoff)
                db.close_old_connections()  # a broken connection is replaced on the next try
                pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            if applied:
                log.debug("applied %d events", applied)  # LOG_LEVEL=DEBUG: one line a turn
                continue  # a turn is bounded (its leases stay fresh): more may be waiting
            # Wait for a hint or the poll interval, whichever comes first.
            if pubsub is None:  # hints off, or Redis unavailable: poll
                pause(options["poll"])
                continue
            try:
                # Short waits, so a stop signal is seen within half a second.
                deadline = time.monotonic() + options["poll"]
                message = None
                while message is None and not stopping and time.monotonic() < deadline:
                    message = pubsub.get_message(
                        timeout=min(0.5, max(0.0, deadline - time.monotonic()))
                    )
                while message is not None:  # drain: one catch-up covers them all
                    message = pubsub.get_message(timeout=0)
            except redis.RedisError:
                log.warning("hint channel unavailable; polling")
                pubsub = None
                pause(options["poll"])
        if pubsub is not None:
            pubsub.close()
        try:
            runner.release()
        except Exception:
            log.warning("could not give the leases up; they expire by themselves")
        log.info("projectors stopped")
