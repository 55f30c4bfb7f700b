"""Addresses are taken out of free text before it is stored (mail servers', providers' answers)."""

from __future__ import annotations

import pytest

from carts.identity import addresses_redacted


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "SMTPRecipientsRefused: {'jane.doe+x@example.com': "
            "(550, b'5.1.1 <jane.doe+x@example.com>: no')}",
            "SMTPRecipientsRefused: {'<address>': (550, b'5.1.1 <<address>>: no')}",
        ),
        (
            "550 5.1.1 user@mail.example.co.uk Recipient address rejected",
            "550 5.1.1 <address> Recipient address rejected",
        ),
        ("Überprüfung: jürgen@bücher.example abgelehnt", "Überprüfung: <address> abgelehnt"),
        ("timed out after 10 s", "timed out after 10 s"),
    ],
)
def test_addresses_are_redacted(text, expected):
    assert addresses_redacted(text) == expected
