"""Which Celery queue a target's work goes to: its runs (Run now and scheduled firings), its
verifications and the restores into it. A target with a ``queue`` (e.g. ``"eu-db"``) is served
only by workers started with ``-Q eu-db`` (``backupsite_run --queues eu-db``), so workers near
its database do its work; a target without one goes to the default queue, ``celery``.

Standard library only: the model's ``clean``, the TOML check and the command's argument parser
all ask :func:`queue_problem`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backups.models import Target

#: Celery's own default queue (``task_default_queue`` is left as it is): backups, restores and
#: verifications of targets without a queue.
DEFAULT_QUEUE = "celery"
#: The watch's and the sweep's queue (settings.CELERY_TASK_ROUTES), served by a worker of its
#: own: a target's long backups there would hold up the watch that reaps dead workers' runs.
WATCH_QUEUE = "watch"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,100}")


def queue_problem(name: str) -> str:
    """Why ``name`` cannot be a target's queue, or "" when it can (1-100 letters, digits, ``-``,
    ``_``, ``.``, ``@``; not the watch's queue)."""
    if not _NAME.fullmatch(name):
        return (
            f"{name[:100]!r} is not a queue name: use 1-100 letters, digits, '-', '_', '.' or '@' "
            '(e.g. "eu-db")'
        )
    if name == WATCH_QUEUE:
        return (
            '"watch" is the queue of the watch\'s own worker; choose another name (e.g. "eu-db"), '
            "or leave it empty for the default queue"
        )
    return ""


def queue_for(target: Target) -> str:
    """The queue of ``target``'s runs, verifications and restores into it: its ``queue``, or
    :data:`DEFAULT_QUEUE` when that is empty. Every dispatch of a target's work passes it to
    ``apply_async(queue=...)``; its schedules' PeriodicTasks carry it for beat."""
    return target.queue or DEFAULT_QUEUE
