"""What integrations plugs into the apps below it, called once from IntegrationsConfig.ready():
each part registers its own extension points (campaigns' hooks, projectors, scheduler jobs)."""

from __future__ import annotations


def register() -> None:
    from integrations import codes, inbound, outbound

    inbound.register()  # nothing yet: inbound deliveries are requests
    codes.register()  # campaigns' code_publish, code_ready and restore_target hooks
    outbound.register()  # the outbound webhooks' projector and scheduler job
