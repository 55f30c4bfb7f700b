"""Simulated shoppers: seeded journeys (journeys.py) played against a running server through its
real HTTP API and websocket (runner.py), for ``manage.py simulate``, ``make run`` and the
benchmarks. Nothing here touches the database: the server is reached only over the network."""

from dashboards.simulator.catalogue import Catalogue, catalogue_load
from dashboards.simulator.client import server_ready
from dashboards.simulator.journeys import Journey, journey
from dashboards.simulator.outbox import progress_line
from dashboards.simulator.runner import Options, Simulator

__all__ = [
    "Catalogue",
    "Journey",
    "Options",
    "Simulator",
    "catalogue_load",
    "journey",
    "progress_line",
    "server_ready",
]
