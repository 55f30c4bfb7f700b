# Issue 14: open steps (the funnel's "waiting") and the on-site offer's credit.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dashboards", "0003_dailycount_amount_numeric"),
    ]

    operations = [
        migrations.AddField(
            model_name="cartfact",
            name="steps_open",
            field=models.JSONField(default=dict),
        ),
        migrations.AddField(
            model_name="cartfact",
            name="redeemed_code",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="cartfact",
            name="onsite_recovered",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="cartfact",
            name="onsite_campaign",
            field=models.IntegerField(null=True),
        ),
        migrations.AddField(
            model_name="cartfact",
            name="onsite_tier",
            field=models.IntegerField(null=True),
        ),
        migrations.AddField(
            model_name="cartfact",
            name="onsite_discount",
            field=models.BigIntegerField(default=0),
        ),
    ]
