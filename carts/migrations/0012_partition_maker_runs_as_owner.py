"""The partition maker runs with its owner's rights (the role that migrated, which owns the log):
the app's role, with only SELECT and INSERT on the log (docs/architecture.md), may still make a
month's partition, from the scheduler's job or on demand in an append, as ATTACH needs the
owner. Its search path is fixed to the migration's, so a caller cannot redirect the tables it
names."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("carts", "0011_log_per_store_order_and_monthly_partitions")]

    operations = [
        migrations.RunSQL(
            "ALTER FUNCTION carts_cartevent_partition_ensure(date) SECURITY DEFINER "
            "SET search_path FROM CURRENT",
            "ALTER FUNCTION carts_cartevent_partition_ensure(date) SECURITY INVOKER "
            "RESET search_path",
        )
    ]
