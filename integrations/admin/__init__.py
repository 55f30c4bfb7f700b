"""The admin of connections (admin/connections.py) and outbound webhooks (admin/webhooks.py)."""

from integrations.admin import connections, webhooks  # noqa: F401  (registers the model admins)
