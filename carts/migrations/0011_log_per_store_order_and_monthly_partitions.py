"""The log without a global lock (docs/adr/0003): per-store order, partitioned by month.

- ``carts_cartevent`` becomes a table partitioned by ``recorded_at``, one partition per UTC month
  (``carts_cartevent_yYYYYmMM``), created by ``carts_cartevent_partition_ensure(month)`` (here, by
  the scheduler a few months ahead, and on demand by the append service). Each event gets a
  ``store_position``: 1, 2, 3... per store, taken from the store's row in ``carts_loghead``, whose
  row lock is held until the append commits, so within a store positions become visible in order
  and appends of different stores never wait for each other. ``position`` stays: a global
  identifier from a sequence, in no guaranteed commit order across stores.
- Keys lead with the store id: the primary key is (store_id, store_position, recorded_at) (the
  partition key must be part of it). Event ids are unique per store by
  ``carts_eventkey`` (a partitioned table cannot hold a unique index without the partition key).
- ``carts_eventkey`` holds each event id once per store (its primary key), with what a duplicate
  delivery is answered: idempotency in one index probe, whatever the number of partitions, and
  still after a month is archived.
- ``carts_projectorcheckpoint`` holds one row per projector and store; ``carts_projectorlease``
  says which runner owns which partition of stores of each projector, and
  ``carts_projectorrunner`` which runners are alive (for a fair share of the partitions).

Existing rows are copied into the new table in position order (an INSERT; the old table is
dropped, never updated), numbering each store's events by position; each projector's checkpoint
becomes, per store, the last store position at or before its global checkpoint, which ADR 0001
made exact (commit order was position order).
"""

import django.db.models.deletion
from django.db import migrations, models

# The partition maker: shared by this migration, the scheduler's job and the append service
# (carts/partitions.py). ATTACH rather than CREATE ... PARTITION OF: attaching an empty table
# locks the parent in SHARE UPDATE EXCLUSIVE mode, which does not wait for running appends.
PARTITION_ENSURE = """
CREATE FUNCTION carts_cartevent_partition_ensure(month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    start date := date_trunc('month', month)::date;
    stop date := (date_trunc('month', month) + interval '1 month')::date;
    part text := format('carts_cartevent_y%sm%s', to_char(start, 'YYYY'), to_char(start, 'MM'));
BEGIN
    -- One maker at a time (two processes may ask for the same month at once).
    PERFORM pg_advisory_xact_lock(1668445298, 1);  -- 0x63726f6e: "cron"
    IF EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'carts_cartevent'::regclass AND c.relname = part) THEN
        RETURN part;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RAISE EXCEPTION 'partition % exists but is detached (archived): restore it first', part
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    EXECUTE format(
        'CREATE TABLE %I (LIKE carts_cartevent INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format(
        'ALTER TABLE carts_cartevent ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part,
        (start::timestamp AT TIME ZONE 'UTC'), (stop::timestamp AT TIME ZONE 'UTC'));
    -- Row triggers are cloned from the parent on ATTACH; TRUNCATE of a partition is not.
    EXECUTE format(
        'CREATE TRIGGER carts_cartevent_no_truncate BEFORE TRUNCATE ON %I '
        'FOR EACH STATEMENT EXECUTE FUNCTION carts_cartevent_refuse_change()', part);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I FROM PUBLIC', part);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I FROM CURRENT_USER', part);
    RETURN part;
END
$$;
"""

FORWARD = (
    """
CREATE TABLE carts_cartevent_next (
    store_id bigint NOT NULL,
    store_position bigint NOT NULL,
    position bigint NOT NULL,
    event_id uuid NOT NULL,
    cart varchar(128) NOT NULL,
    version integer NOT NULL CHECK (version >= 0),
    type varchar(64) NOT NULL,
    schema_version smallint NOT NULL CHECK (schema_version >= 0),
    data jsonb NOT NULL,
    shopper jsonb NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    body_hash varchar(64) NOT NULL,
    source varchar(16) NOT NULL DEFAULT 'unknown',
    source_ref varchar(128) NOT NULL DEFAULT '',
    PRIMARY KEY (store_id, store_position, recorded_at)
) PARTITION BY RANGE (recorded_at);

CREATE TABLE carts_eventkey (
    store_id bigint NOT NULL,
    event_id uuid NOT NULL,
    cart varchar(128) NOT NULL,
    version integer NOT NULL,
    position bigint NOT NULL,
    store_position bigint NOT NULL,
    body_hash varchar(64) NOT NULL,
    source varchar(16) NOT NULL,
    PRIMARY KEY (store_id, event_id)
);

CREATE TABLE carts_loghead (
    store_id bigint PRIMARY KEY
        REFERENCES carts_store (id) DEFERRABLE INITIALLY DEFERRED,
    position bigint NOT NULL
);

-- The parent's name is needed by the partition maker: swap the tables first.
ALTER TABLE carts_cartevent RENAME CONSTRAINT carts_cartevent_pkey TO carts_cartevent_0011_pkey;
ALTER TABLE carts_cartevent RENAME TO carts_cartevent_before_0011;
ALTER TABLE carts_cartevent_next RENAME TO carts_cartevent;
ALTER TABLE carts_cartevent RENAME CONSTRAINT carts_cartevent_next_pkey TO carts_cartevent_pkey;
"""
    + PARTITION_ENSURE
    + """
CREATE TRIGGER carts_cartevent_no_update_delete
    BEFORE UPDATE OR DELETE ON carts_cartevent
    FOR EACH ROW EXECUTE FUNCTION carts_cartevent_refuse_change();
CREATE TRIGGER carts_cartevent_no_truncate
    BEFORE TRUNCATE ON carts_cartevent
    FOR EACH STATEMENT EXECUTE FUNCTION carts_cartevent_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON carts_cartevent FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON carts_cartevent FROM CURRENT_USER;

CREATE INDEX cartevent_store_event_id ON carts_cartevent (store_id, event_id);
CREATE INDEX cartevent_store_cart_version ON carts_cartevent (store_id, cart, version);
CREATE INDEX cartevent_position ON carts_cartevent (position);

-- Every month that has events, this month and the next two.
SELECT carts_cartevent_partition_ensure(m::date)
FROM (
    SELECT DISTINCT date_trunc('month', recorded_at AT TIME ZONE 'UTC') AS m
    FROM carts_cartevent_before_0011
    UNION
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + k * interval '1 month'
    FROM generate_series(0, 2) AS k
) AS months;

INSERT INTO carts_cartevent (
    store_id, store_position, position, event_id, cart, version, type, schema_version, data,
    shopper, occurred_at, recorded_at, body_hash, source, source_ref)
SELECT store_id, row_number() OVER (PARTITION BY store_id ORDER BY position), position,
       event_id, cart, version, type, schema_version, data, shopper, occurred_at, recorded_at,
       body_hash, source, source_ref
FROM carts_cartevent_before_0011;

INSERT INTO carts_eventkey (
    store_id, event_id, cart, version, position, store_position, body_hash, source)
SELECT store_id, event_id, cart, version, position, store_position, body_hash, source
FROM carts_cartevent;

INSERT INTO carts_loghead (store_id, position)
SELECT store_id, max(store_position) FROM carts_cartevent GROUP BY store_id;

-- Positions go on from where the old identity column was (one sequence for every partition).
CREATE SEQUENCE carts_cartevent_position_seq_0011;
SELECT setval('carts_cartevent_position_seq_0011',
              (SELECT COALESCE(max(position), 0) + 1 FROM carts_cartevent_before_0011), false);
DROP TABLE carts_cartevent_before_0011;
ALTER SEQUENCE carts_cartevent_position_seq_0011 RENAME TO carts_cartevent_position_seq;
ALTER TABLE carts_cartevent
    ALTER COLUMN position SET DEFAULT nextval('carts_cartevent_position_seq');
ALTER SEQUENCE carts_cartevent_position_seq OWNED BY carts_cartevent.position;

-- Checkpoints per projector and store.
ALTER TABLE carts_projectorcheckpoint
    RENAME CONSTRAINT carts_projectorcheckpoint_pkey TO carts_projectorcheckpoint_0011_pkey;
ALTER TABLE carts_projectorcheckpoint RENAME TO carts_projectorcheckpoint_before_0011;
CREATE TABLE carts_projectorcheckpoint (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name varchar(64) NOT NULL,
    store_id bigint NOT NULL REFERENCES carts_store (id) DEFERRABLE INITIALLY DEFERRED,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    CONSTRAINT projectorcheckpoint_unique_store UNIQUE (store_id, name)
);
INSERT INTO carts_projectorcheckpoint (name, store_id, position, updated_at)
SELECT c.name, e.store_id, max(e.store_position), now()
FROM carts_projectorcheckpoint_before_0011 c
JOIN carts_cartevent e ON e.position <= c.position
GROUP BY c.name, e.store_id;
DROP TABLE carts_projectorcheckpoint_before_0011;

CREATE TABLE carts_projectorlease (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name varchar(64) NOT NULL,
    part integer NOT NULL,
    owner varchar(128) NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT projectorlease_unique_part UNIQUE (name, part)
);
CREATE TABLE carts_projectorrunner (
    owner varchar(128) PRIMARY KEY,
    names jsonb NOT NULL,
    expires_at timestamptz NOT NULL
);
"""
)


class Migration(migrations.Migration):
    # One transaction: the copy and the swap are all or nothing.
    atomic = True

    dependencies = [("carts", "0010_shopper_keys")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD)],  # no way back: the old log is gone
            state_operations=[
                migrations.RemoveConstraint(
                    model_name="cartevent", name="cartevent_unique_event_id"
                ),
                migrations.RemoveConstraint(
                    model_name="cartevent", name="cartevent_unique_cart_version"
                ),
                migrations.AlterField(
                    model_name="cartevent",
                    name="store",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="carts.store",
                    ),
                ),
                migrations.AddField(
                    model_name="cartevent",
                    name="store_position",
                    field=models.BigIntegerField(
                        default=0,
                        help_text="1, 2, 3... per store, in commit order (docs/adr/0003).",
                    ),
                    preserve_default=False,
                ),
                migrations.AddIndex(
                    model_name="cartevent",
                    index=models.Index(
                        fields=["store", "event_id"], name="cartevent_store_event_id"
                    ),
                ),
                migrations.AddIndex(
                    model_name="cartevent",
                    index=models.Index(
                        fields=["store", "cart", "version"], name="cartevent_store_cart_version"
                    ),
                ),
                migrations.AddIndex(
                    model_name="cartevent",
                    index=models.Index(fields=["position"], name="cartevent_position"),
                ),
                migrations.CreateModel(
                    name="LogHead",
                    fields=[
                        (
                            "store",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                primary_key=True,
                                related_name="+",
                                serialize=False,
                                to="carts.store",
                            ),
                        ),
                        ("position", models.BigIntegerField()),
                    ],
                ),
                migrations.CreateModel(
                    name="EventKey",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "store_id",
                                "event_id",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        (
                            "store",
                            models.ForeignKey(
                                db_constraint=False,
                                db_index=False,
                                on_delete=django.db.models.deletion.DO_NOTHING,
                                related_name="+",
                                to="carts.store",
                            ),
                        ),
                        ("event_id", models.UUIDField()),
                        ("cart", models.CharField(max_length=128)),
                        ("version", models.IntegerField()),
                        ("position", models.BigIntegerField()),
                        ("store_position", models.BigIntegerField()),
                        ("body_hash", models.CharField(max_length=64)),
                        ("source", models.CharField(max_length=16)),
                    ],
                ),
                migrations.DeleteModel(name="ProjectorCheckpoint"),
                migrations.CreateModel(
                    name="ProjectorCheckpoint",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=64)),
                        ("position", models.BigIntegerField(default=0)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "store",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="carts.store",
                            ),
                        ),
                    ],
                    options={
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("store", "name"), name="projectorcheckpoint_unique_store"
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="ProjectorRunner",
                    fields=[
                        (
                            "owner",
                            models.CharField(max_length=128, primary_key=True, serialize=False),
                        ),
                        ("names", models.JSONField()),
                        ("expires_at", models.DateTimeField()),
                    ],
                ),
                migrations.CreateModel(
                    name="ProjectorLease",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=64)),
                        ("part", models.IntegerField()),
                        ("owner", models.CharField(max_length=128)),
                        ("expires_at", models.DateTimeField()),
                    ],
                    options={
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("name", "part"), name="projectorlease_unique_part"
                            )
                        ],
                    },
                ),
            ],
        )
    ]
