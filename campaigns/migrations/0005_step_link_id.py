"""Steps get an opaque random ``link_id`` for the links in their emails (restore, unsubscribe,
stop, open pixel) in place of the sequential primary key. Existing steps get one each."""

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0004_campaign_enrolled_through"),
    ]

    operations = [
        migrations.AddField(
            model_name="step",
            name="link_id",
            field=models.UUIDField(editable=False, null=True),
        ),
        # One random id per existing row (gen_random_uuid: built into PostgreSQL 13+). Links
        # already sent carry the old step ids and stop working; they were forgeable.
        migrations.RunSQL(
            "UPDATE campaigns_step SET link_id = gen_random_uuid() WHERE link_id IS NULL",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="step",
            name="link_id",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
