"""The audit log, append-only in the database itself: triggers refuse UPDATE and DELETE on
``backup_audit_event`` (PostgreSQL and SQLite; other databases rely on the model's guards).

The one update allowed is Django's SET_NULL when a user is deleted: ``user_id`` becomes NULL and
every other column stays as it was (``username`` keeps the name). The SQLite trigger lists the
table's columns when it is created: a later migration that adds a column to this table must
drop and re-create the triggers with ``install_triggers`` (SQLite also drops them whenever it
rebuilds the table). PostgreSQL compares whole rows, so new columns are covered as they come.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

TABLE = "backup_audit_event"
MESSAGE = "audit events are append-only"

POSTGRESQL_INSTALL = f"""
CREATE OR REPLACE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Deleting a user sets user_id to NULL (the username stays): the one change allowed.
    IF TG_OP = 'UPDATE' AND NEW.user_id IS NULL
       AND to_jsonb(NEW) - 'user_id' = to_jsonb(OLD) - 'user_id' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = '{MESSAGE}: ' || TG_OP || ' on {TABLE} refused', ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only();
"""
POSTGRESQL_REMOVE = f"""
DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE};
DROP FUNCTION IF EXISTS {TABLE}_append_only();
"""


def sqlite_triggers(columns):
    """The CREATE TRIGGER statements for SQLite, whose triggers cannot compare whole rows."""
    unchanged = " AND ".join(f'NEW."{column}" IS OLD."{column}"' for column in columns if column != "user_id")
    return [
        f"""CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
            WHEN NOT (NEW.user_id IS NULL AND {unchanged})
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE on {TABLE} refused'); END""",
        f"""CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
            BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE on {TABLE} refused'); END""",
    ]


def install_triggers(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_INSTALL)
    elif connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            columns = [column.name for column in connection.introspection.get_table_description(cursor, TABLE)]
        for statement in sqlite_triggers(columns):
            schema_editor.execute(statement)


def remove_triggers(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_REMOVE)
    elif connection.vendor == "sqlite":
        for name in (f"{TABLE}_no_update", f"{TABLE}_no_delete"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ("backups", "0013_target_tags_and_role_grants"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                (
                    "username",
                    models.CharField(
                        blank=True,
                        help_text="Kept when the user is deleted; the name tried for a failed login.",
                        max_length=150,
                    ),
                ),
                (
                    "auth_method",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("local", "Local account"),
                            ("ldap", "LDAP"),
                            ("oidc", "OpenID Connect"),
                            ("proxy", "Reverse proxy"),
                            ("none", "Not logged in"),
                            ("cli", "Command line"),
                            ("system", "System"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "address",
                    models.GenericIPAddressField(
                        blank=True, help_text="The client's address (behind BACKUPSITE_TRUSTED_PROXIES).", null=True
                    ),
                ),
                ("action", models.CharField(max_length=64)),
                ("object_type", models.CharField(blank=True, help_text='e.g. "backups.target"', max_length=100)),
                ("object_id", models.CharField(blank=True, max_length=64)),
                ("object_repr", models.CharField(blank=True, max_length=200)),
                (
                    "outcome",
                    models.CharField(
                        choices=[("success", "Success"), ("failure", "Failure"), ("refused", "Refused")],
                        default="success",
                        max_length=16,
                    ),
                ),
                ("details", models.JSONField(blank=True, default=dict)),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="audit_events",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "db_table": "backup_audit_event",
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(fields=["-created_at", "-id"], name="audit_event_recent_idx"),
                    models.Index(fields=["action", "-created_at"], name="audit_event_action_idx"),
                ],
            },
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
