"""Exit codes and the one exception type of backupctl: every failure becomes one readable line on
stderr and an exit code a script can act on."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the backup, restore or verification itself failed (or the site is unhealthy)
EXIT_USAGE = 2  # bad arguments or configuration, refused by the API (auth, permission, conflict)
EXIT_UNREACHABLE = 3  # the server could not be reached or could not answer (5xx)
EXIT_GAVE_UP = 4  # --wait-timeout passed while the work was still going on
EXIT_INTERRUPTED = 130  # Ctrl-C


class CtlError(Exception):
    """A failure to report as ``backupctl: <message>`` with ``exit_code``. Messages never hold the
    token: it is not passed to anything that builds one."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ApiError(CtlError):
    """A JSON error answer of /api/v1/: ``{"code", "message", "field"}`` and its HTTP status."""

    def __init__(self, status: int, code: str, message: str, field: str | None, url: str) -> None:
        where = f" (field {field})" if field else ""
        exit_code = EXIT_UNREACHABLE if status >= 500 else EXIT_USAGE
        super().__init__(f"{code}: {message}{where} [HTTP {status} from {url}]", exit_code)
        self.status, self.code, self.field = status, code, field


class Unreachable(CtlError):
    """No answer at all: refused, unknown host, timed out, TLS failure."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}", EXIT_UNREACHABLE)
        self.url, self.reason = url, reason
