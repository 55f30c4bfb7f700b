from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        from campaigns import events, privacy, services, steps
        from carts.models import Store
        from carts.privacy import export_section_register
        from carts.services import store_demo_hook_register

        def demo_campaign(store: Store) -> None:
            services.campaign_demo_ensure(store=store)

        events.event_types_register()
        _email_webhooks_connect()
        steps.order_reaction_register()  # an order cancels the cart's open steps, atomically
        # A shopper's export (carts/privacy.py) lists their enrollments, steps, codes, suppressions.
        export_section_register(privacy.NAME, privacy.export_section)
        _scheduler_jobs_register()
        # `create_store --demo` (and `make run`) give the demo store an active on-site campaign.
        store_demo_hook_register(demo_campaign)


def _email_webhooks_connect() -> None:
    from anymail.signals import tracking

    from campaigns import webhooks

    # Providers' bounces and complaints (anymail's webhooks; campaigns/webhooks.py).
    tracking.connect(webhooks.tracking_received, dispatch_uid="campaigns.tracking_received")


def _scheduler_jobs_register() -> None:
    from django.conf import settings

    from campaigns import clock, enrolment, steps
    from carts import scheduler

    def enroll() -> None:
        enrolment.abandoned_carts_enroll(now=clock.now())

    def enqueue() -> None:
        steps.due_steps_enqueue(now=clock.now())

    # The scheduler is one active instance behind a Redis lock (carts/scheduler.py).
    scheduler.register("campaigns.enroll", settings.CAMPAIGNS_SCAN_SECONDS, enroll)
    scheduler.register("campaigns.enqueue", settings.CAMPAIGNS_ENQUEUE_SECONDS, enqueue)
