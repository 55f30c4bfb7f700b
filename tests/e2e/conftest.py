"""Fixtures for multi-process tests, and where browser tests keep their screenshots."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e import procs

PROJECT = Path(__file__).resolve().parents[2]
# Browser tests' screenshots: kept after the run (pytest rotates tmp_path), git-ignored (var/).
SCREENSHOTS = PROJECT / "var" / "test-screenshots"


@pytest.fixture
def isolated_redis(settings):
    """Point this process (and the children it starts) at a Redis database of their own, so
    heartbeats, the scheduler lock and Celery's queue are not shared with a `make run` or another
    test run on the same machine."""
    url = procs.redis_url_with_db(settings.REDIS_URL, procs.isolated_redis_db())
    settings.REDIS_URL = url
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()
    conn.close()


def screenshots_root() -> Path:
    """$SCREENSHOT_DIR if set, else var/test-screenshots/ in the project."""
    given = os.environ.get("SCREENSHOT_DIR", "").strip()
    return Path(given).expanduser().resolve() if given else SCREENSHOTS


class Screenshots:
    """Saves a test's screenshots to ``<root>/<test name>/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, target: Any, name: str) -> Path:
        """Screenshot ``target`` (a WebDriver: the window; a WebElement: the element) as
        ``name`` (a .png file name); prints and returns its path."""
        path = self.directory / name
        taken = (
            target.save_screenshot(str(path))
            if hasattr(target, "save_screenshot")
            else target.screenshot(str(path))
        )
        if not taken:
            raise OSError(f"the screenshot {path} could not be written")
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    """Where this test keeps its screenshots, past pytest's rotation of tmp_path:
    ``var/test-screenshots/<test name>/`` (or ``$SCREENSHOT_DIR/<test name>/``), emptied of an
    earlier run's first."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-.") or "test"
    directory = screenshots_root() / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return Screenshots(directory)
