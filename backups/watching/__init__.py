"""Watching backups that other tools write (issue 23): targets with ``engine = "external"``.

settings.py   the watch settings (prefix, pattern, expect, grace, time_from_name) and their rules
expect.py     when a file is due: the ``expect`` cron, evaluated by the clock schedules registers
adoption.py   listing the watched folder and adopting new files (one streamed read: size, SHA-256)
alerts.py     missed / recovered (a late file, a storage that cannot be listed) and shrunken files
service.py    one scan: claim, adopt, alert, retention; the refusal of runs and restores

Callers enter through ``backups.services`` (scan_external_target, external_targets, run_refusal,
register_cron_clock). See docs/EXTERNAL.md.
"""
