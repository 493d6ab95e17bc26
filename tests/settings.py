"""Test settings: the real settings module, pointed at a throwaway BACKUPSITE_HOME."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("BACKUPSITE_HOME", tempfile.mkdtemp(prefix="backupsite-test-home-"))
os.environ.pop("DATABASE_URL", None)

from backupsite.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
