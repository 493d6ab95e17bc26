"""Each copy keeps its backup's target, so the dashboard sums stored bytes per target from one
partial covering index instead of joining every stored copy to ``backup_history``."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_targets(apps, schema_editor):
    Backup = apps.get_model("backups", "Backup")
    BackupCopy = apps.get_model("backups", "BackupCopy")
    of_backup = Backup.objects.filter(pk=OuterRef("backup_id")).values("target_id")[:1]
    BackupCopy.objects.update(target_id=Subquery(of_backup))


class Migration(migrations.Migration):
    dependencies = [
        ("backups", "0011_dashboard_and_list_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="backup", name="backup_not_deleted_idx"),
        migrations.RemoveIndex(model_name="backupcopy", name="backupcopy_stored_idx"),
        migrations.AddField(
            model_name="backupcopy",
            name="target",
            field=models.ForeignKey(
                null=True,
                editable=False,
                on_delete=models.deletion.CASCADE,
                related_name="+",
                to="backups.target",
            ),
        ),
        migrations.RunPython(fill_targets, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="backupcopy",
            name="target",
            field=models.ForeignKey(
                editable=False,
                on_delete=models.deletion.CASCADE,
                related_name="+",
                to="backups.target",
            ),
        ),
        migrations.AddIndex(
            model_name="backupcopy",
            index=models.Index(
                condition=models.Q(("status", "stored")),
                fields=["target", "storage", "size"],
                name="backupcopy_stored_idx",
            ),
        ),
    ]
