"""Placeholder: outbound webhooks admin."""
