from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Campaigns"

    def ready(self) -> None:
        from campaigns import events, services
        from carts.models import Store
        from carts.services import store_demo_hook_register

        def demo_campaign(store: Store) -> None:
            services.campaign_demo_ensure(store=store)

        events.event_types_register()
        # `create_store --demo` (and `make run`) give the demo store an active on-site campaign.
        store_demo_hook_register(demo_campaign)
