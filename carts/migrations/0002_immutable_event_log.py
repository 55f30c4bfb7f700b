"""Make carts_cartevent append-only in the database itself.

Row triggers refuse UPDATE and DELETE, a statement trigger refuses TRUNCATE (row triggers do not
fire on it), and the privileges are revoked from PUBLIC and from the role running the migration,
so the app's role is refused even when it owns the table. Triggers also stop a superuser.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION carts_cartevent_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'carts_cartevent is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Corrections are new events.';
END
$$;

CREATE TRIGGER carts_cartevent_no_update_delete
    BEFORE UPDATE OR DELETE ON carts_cartevent
    FOR EACH ROW EXECUTE FUNCTION carts_cartevent_refuse_change();

CREATE TRIGGER carts_cartevent_no_truncate
    BEFORE TRUNCATE ON carts_cartevent
    FOR EACH STATEMENT EXECUTE FUNCTION carts_cartevent_refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON carts_cartevent FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON carts_cartevent FROM CURRENT_USER;
"""

BACKWARD = """
DROP TRIGGER IF EXISTS carts_cartevent_no_truncate ON carts_cartevent;
DROP TRIGGER IF EXISTS carts_cartevent_no_update_delete ON carts_cartevent;
DROP FUNCTION IF EXISTS carts_cartevent_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("carts", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
