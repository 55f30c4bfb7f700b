"""The log's (store_id, event_id) index goes: carts_eventkey finds an event by its id (then the
log's primary key by store position), so every append wrote that index for nothing."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("carts", "0012_partition_maker_runs_as_owner")]

    operations = [
        migrations.RemoveIndex(model_name="cartevent", name="cartevent_store_event_id"),
    ]
