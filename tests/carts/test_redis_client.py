"""One Redis client per process, even when a fresh server's first requests ask for it at once: a
second client made in a race would be dropped, and dropping a client closes its connections
under a request using them (500s at start-up, seen by tests/e2e/test_many_processes.py)."""

from __future__ import annotations

import threading

from carts import redis_client


def test_threads_asking_at_once_share_one_client(monkeypatch):
    monkeypatch.setattr(redis_client, "_client", None)
    made = []
    real = redis_client.redis.Redis.from_url

    def slow_from_url(*args, **kwargs):
        made.append(1)
        threading.Event().wait(0.05)  # widen the race window
        return real(*args, **kwargs)

    monkeypatch.setattr(redis_client.redis.Redis, "from_url", slow_from_url)
    start = threading.Barrier(8)
    clients = []

    def ask() -> None:
        start.wait()
        clients.append(redis_client.client())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 1
    assert len({id(c) for c in clients}) == 1
