"""The key catalog (EncryptionKey): age recipients that backups are encrypted to, and where
each key's identity lives on this host, as a secret reference only. The catalog never holds an
identity: a stolen database decrypts nothing."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower

from backups.models.catalog import managed_by_field, validate_secret_reference
from backups.streaming.encryption import EncryptionError, key_fingerprint, parse_recipient


def validate_recipient(value: str) -> None:
    try:
        parse_recipient(value)
    except EncryptionError as exc:
        raise ValidationError(f"{exc}; age-keygen -y key.txt prints a key file's recipient") from None


class EncryptionKey(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    recipient = models.CharField(
        max_length=100,
        unique=True,
        validators=[validate_recipient],
        help_text="The public key backups are encrypted to (age1...); it cannot decrypt anything.",
    )
    fingerprint = models.CharField(
        max_length=32,
        unique=True,
        editable=False,
        help_text="The key id recorded on every backup encrypted to it (from the recipient).",
    )
    identity = models.CharField(
        max_length=512,
        blank=True,
        validators=[validate_secret_reference],
        help_text="Where this host finds the private key file (AGE-SECRET-KEY-1...): a reference "
        "such as ${file:/run/secrets/backup.key}, resolved only when a backup is decrypted. Empty: "
        "this host cannot decrypt (an escrow key kept offline).",
    )
    managed_by = managed_by_field()
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(
        null=True, blank=True, help_text="Retired: no new backup is encrypted to it; old ones still decrypt."
    )

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="encryption_key_name_ci_unique")]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        self.recipient = self.recipient.strip()
        self.fingerprint = key_fingerprint(self.recipient)
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None
