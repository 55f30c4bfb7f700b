"""``make run``'s signing keys: generated once per clone into ``var/secrets.json`` and reused.

The file holds three independent random keys (the Django SECRET_KEY, the shopper-ticket key and
the campaign-link key), is created with mode 0600, and is created atomically: the first process
to start writes a complete file under a temporary name and links it into place, so processes
started together (manage.py, the web server, the worker) all end up with the same keys. The
environment's DJANGO_SECRET_KEY / RECOVERY_TICKET_KEYS / CAMPAIGNS_LINK_KEYS take precedence
(config/settings/local.py). Production settings never read this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

FILE_NAME = "secrets.json"
# The variable each key stands in for when the environment does not set it.
KEYS = ("DJANGO_SECRET_KEY", "RECOVERY_TICKET_KEYS", "CAMPAIGNS_LINK_KEYS")


class LocalSecretsError(Exception):
    """The file exists but cannot be used (unreadable, not JSON, a key missing)."""


def generate() -> dict[str, str]:
    """Fresh keys, each independent of the others."""
    return {name: secrets.token_urlsafe(50) for name in KEYS}


def load_or_create(var_dir: Path) -> dict[str, str]:
    """The keys in ``var_dir/secrets.json``, creating the file (0600) on first use."""
    path = var_dir / FILE_NAME
    if not path.exists():
        _create(path, generate())
    return _read(path)


def _create(path: Path, values: dict[str, str]) -> None:
    create_once(path, json.dumps(values, indent=2) + "\n")


def create_once(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) unless it exists, atomically: a complete file is
    written under a temporary name and linked into place, and link() fails if the name exists,
    so of two processes starting together one file wins, complete, and both read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def token_load_or_create(path: Path) -> str:
    """A single random token kept in ``path`` (made on first use, like the keys' file)."""
    if not path.exists():
        create_once(path, secrets.token_urlsafe(32) + "\n")
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise LocalSecretsError(f"{path} cannot be read ({exc}); delete it.") from exc
    if not token:
        raise LocalSecretsError(f"{path} is empty; delete it to make a new token.")
    return token


def _read(path: Path) -> dict[str, str]:
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # readable by others: secrets are for this user only
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LocalSecretsError(
            f"{path} cannot be read ({exc}); delete it to make new keys."
        ) from exc
    if not isinstance(values, dict) or not all(
        isinstance(values.get(name), str) and values[name] for name in KEYS
    ):
        raise LocalSecretsError(
            f"{path} lacks one of {', '.join(KEYS)}; delete it to make new keys."
        )
    return {name: values[name] for name in KEYS}
