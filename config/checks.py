"""Deployment checks of the project's own keys (``manage.py check --deploy``).

Django's security.W009 judges SECRET_KEY by length and variety only, so a published key passes
it (security review 2, finding 4). These checks also cover the signing keys of tickets and links.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

# Keys that have been public: the fallback every instance signed with before issue 11.
PUBLIC_KEYS = frozenset({"dev-insecure-change-me-" + "x" * 32})
MIN_SIGNING_KEY_LENGTH = 32


def _signing_keys() -> dict[str, list[str]]:
    return {
        "SECRET_KEY": [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS],
        "RECOVERY_TICKET_KEYS": list(settings.RECOVERY_TICKET_KEYS),
        "CAMPAIGNS_LINK_KEYS": list(settings.CAMPAIGNS_LINK_KEYS),
    }


@register(Tags.security, deploy=True)
def check_signing_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    keys = _signing_keys()
    for name, values in keys.items():
        if any(value in PUBLIC_KEYS for value in values):
            found.append(
                Error(
                    f"{name} holds a key that has been published: anyone can sign with it.",
                    hint="Make a new one: python -c 'import secrets; "
                    "print(secrets.token_urlsafe(50))'.",
                    id="config.E001",
                )
            )
        if name != "SECRET_KEY" and any(len(v) < MIN_SIGNING_KEY_LENGTH for v in values):
            found.append(
                Warning(
                    f"{name} holds a key shorter than {MIN_SIGNING_KEY_LENGTH} characters.",
                    hint="Use secrets.token_urlsafe(50).",
                    id="config.W002",
                )
            )
    names = list(keys)
    for i, name in enumerate(names):
        for other in names[i + 1 :]:
            if set(keys[name]) & set(keys[other]):
                found.append(
                    Warning(
                        f"{name} and {other} share a key: a leak of one unlocks the other.",
                        hint="Give each its own random key.",
                        id="config.W003",
                    )
                )
    return found


@register()
def check_rate_limits(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every RATE_LIMIT_* rule parses (a malformed one is let through at run time, logged)."""
    from limits import parse

    found: list[CheckMessage] = []
    for name, text in settings.RATE_LIMITS.items():
        try:
            if text:
                parse(text)
        except ValueError as exc:
            found.append(
                Error(
                    f"RATE_LIMIT_{name.upper()} = {text!r} is not a rate limit: {exc}",
                    hint="Write it as '60/minute', '120 per 10 seconds', or '' (off).",
                    id="config.E004",
                )
            )
    return found
