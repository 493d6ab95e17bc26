"""One backup run: claim it (claims), write it to every storage (destinations), record its steps
(steps, heartbeat), skip it when nothing changed (unchanged), link incrementals (chains) and
describe it (manifests). The entry point is ``service.run_backup``, reached through
``backups.services``."""
