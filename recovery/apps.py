from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    name = "recovery"
    verbose_name = "Real-time recovery"

    def ready(self) -> None:
        from carts import services
        from recovery import campaign_hooks, live, offer_push
        from recovery.serving import CouncilScorer

        live.event_types_register()  # recovery.offer_decided and the browser's reactions
        # Every append scores the carts it changes, in the same transaction (carts/append.py).
        services.cart_scorer_set(CouncilScorer())
        campaign_hooks.register()  # price sensitivity and the on-site channel for campaigns
        offer_push.register()  # campaign on-site offers pushed from the log, once committed
