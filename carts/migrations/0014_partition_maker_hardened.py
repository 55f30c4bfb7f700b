"""The partition maker, which runs with the log owner's rights (0012), resolves nothing through
the caller's search path: only pg_catalog (and pg_temp last, which holds no functions or
operators), with every table of ours named with its schema. A role that may create objects in a
schema on the path could otherwise define a better-matching ``to_char`` and run it as the
owner. EXECUTE is no longer granted to PUBLIC: the owner has it, and an app role that is not
the owner is granted it with its other rights (docs/operations.md)."""

from django.db import migrations

MAKER = r"""
CREATE OR REPLACE FUNCTION {schema}.carts_cartevent_partition_ensure(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    start date := date_trunc('month', month::timestamp)::date;
    stop date := (date_trunc('month', month::timestamp) + interval '1 month')::date;
    part text := format('carts_cartevent_y%sm%s',
                        to_char(start::timestamp, 'YYYY'), to_char(start::timestamp, 'MM'));
    parent regclass := to_regclass(format('%I.carts_cartevent', {schema_literal}));
BEGIN
    PERFORM pg_advisory_xact_lock(1668445298, 1);
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = parent AND c.relname = part) THEN
        RETURN part;
    END IF;
    IF to_regclass(format('%I.%I', {schema_literal}, part)) IS NOT NULL THEN
        RAISE EXCEPTION 'partition % exists but is detached (archived): restore it first', part
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE format(
        'CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
        {schema_literal}, part, parent);
    EXECUTE format(
        'ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)', parent,
        {schema_literal}, part,
        (start::timestamp AT TIME ZONE 'UTC'), (stop::timestamp AT TIME ZONE 'UTC'));
    EXECUTE format(
        'CREATE TRIGGER carts_cartevent_no_truncate BEFORE TRUNCATE ON %I.%I '
        'FOR EACH STATEMENT EXECUTE FUNCTION %I.carts_cartevent_refuse_change()',
        {schema_literal}, part, {schema_literal});
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM PUBLIC', {schema_literal}, part);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM CURRENT_USER',
                   {schema_literal}, part);
    RETURN part;
END
$$;
REVOKE EXECUTE ON FUNCTION {schema}.carts_cartevent_partition_ensure(date) FROM PUBLIC;
"""


def harden(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = cursor.fetchone()[0]
        quoted = connection.ops.quote_name(schema)
        literal = "'" + schema.replace("'", "''") + "'"
        cursor.execute(MAKER.format(schema=quoted, schema_literal=literal))


class Migration(migrations.Migration):
    dependencies = [("carts", "0013_drop_log_event_id_index")]

    operations = [migrations.RunPython(harden, migrations.RunPython.noop)]
