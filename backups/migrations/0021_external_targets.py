import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0020_api_tokens"),
    ]

    operations = [
        migrations.CreateModel(
            name="ExternalWatch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "scanner",
                    models.CharField(
                        blank=True,
                        help_text="host:pid of the process scanning it now; empty: none.",
                        max_length=255,
                    ),
                ),
                (
                    "claimed_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="The scanner's last sign of life (a scan is claimed, then touched).",
                        null=True,
                    ),
                ),
                (
                    "scanned_at",
                    models.DateTimeField(
                        blank=True, help_text="When a scan last listed the storage.", null=True
                    ),
                ),
                (
                    "seen",
                    models.PositiveIntegerField(
                        default=0, help_text="Files matching the pattern at the last listing."
                    ),
                ),
                (
                    "error",
                    models.TextField(
                        blank=True, help_text="Why the last scan could not list or read; empty: it could."
                    ),
                ),
                (
                    "failing_since",
                    models.DateTimeField(
                        blank=True,
                        help_text="Scans have failed since then (alerted once, until one succeeds).",
                        null=True,
                    ),
                ),
                (
                    "missed_since",
                    models.DateTimeField(
                        blank=True,
                        help_text="The expected time of a file that did not come within the grace (alerted once, "
                        "until a file comes).",
                        null=True,
                    ),
                ),
                (
                    "retention_note",
                    models.TextField(
                        blank=True,
                        help_text="What stopped the last retention pass (the safety brake, a storage error).",
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "target",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE, related_name="watch", to="backups.target"
                    ),
                ),
            ],
        ),
    ]
