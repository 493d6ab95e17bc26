"""Every failure of the API as one JSON shape: ``{"code", "message", "field"}``.

Codes: ``invalid`` (400/422, ``field`` names the input), ``unauthenticated`` (401),
``forbidden`` (403), ``not_found`` (404), ``method_not_allowed`` (405), ``conflict`` (409),
``rate_limited`` (429, with ``Retry-After``), ``unavailable`` (503). Bad input is never a 500:
ninja's own validation errors, 404s and authentication failures are answered here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

logger = logging.getLogger(__name__)
PREFIX = "/api/v1/"

CODES = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid",
    429: "rate_limited",
    500: "server_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal to answer as asked: the status, a stable code, a sentence naming the problem
    and the fix, the input at fault (or None) and extra headers (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        code: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.code = code or CODES.get(status, "invalid")
        self.headers = headers or {}


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, message, field=field)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"there is no {what} (or you may not see it)")


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def error_response(error: ApiError) -> JsonResponse:
    response = JsonResponse(
        {"code": error.code, "message": error.message, "field": error.field}, status=error.status
    )
    for name, value in error.headers.items():
        response[name] = value
    response["Cache-Control"] = "no-store"
    return response


def install(api: NinjaAPI) -> None:
    """Answer every failure ``api`` meets with :func:`error_response`."""

    @api.exception_handler(ApiError)
    def on_api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        return error_response(exc)

    @api.exception_handler(NinjaValidationError)
    def on_validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        return error_response(from_validation(exc.errors))

    @api.exception_handler(AuthenticationError)
    def on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        return error_response(ApiError(401, "missing token: send the header Authorization: Bearer <token>"))

    @api.exception_handler(Http404)
    def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(ApiError(404, str(exc) or "not found"))

    @api.exception_handler(PermissionDenied)
    def on_permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
        return error_response(ApiError(403, str(exc) or "you may not do that"))

    @api.exception_handler(HttpError)
    def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400:  # ninja could not parse the body
            return error_response(
                ApiError(400, f"{exc}: send a JSON object (Content-Type: application/json)")
            )
        return error_response(ApiError(exc.status_code, str(exc)))

    @api.exception_handler(Exception)
    def on_failure(request: HttpRequest, exc: Exception) -> HttpResponse:
        # A bug, not bad input: the log has the traceback, the client one sentence (never the
        # traceback, which may hold paths and values).
        logger.exception("API %s %s failed", request.method, request.path)
        return error_response(
            ApiError(500, "the server failed to answer; the details are in its log", code="server_error")
        )


def from_validation(errors: list[dict[str, Any]]) -> ApiError:
    """ninja's (pydantic's) first validation error as one ``invalid`` answer naming its field."""
    first = errors[0] if errors else {}
    location = [
        str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "payload")
    ]
    field = ".".join(location) or None
    message = str(first.get("msg", "invalid input"))
    if field is None:
        return ApiError(422, message)
    return invalid(field, f"{field}: {message}")


def not_found_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/v1/: the same JSON 404 (Django's would be an HTML page)."""
    return error_response(
        ApiError(404, f"no such endpoint: /api/v1/{rest}; /api/v1/docs lists them (docs/API.md too)")
    )


class JsonMethodNotAllowed:
    """A middleware: ninja answers a method a path does not take with plain text; under
    ``/api/v1/`` that becomes the JSON error too (405 ``method_not_allowed``, ``Allow`` kept)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or not request.path.startswith(PREFIX):
            return response
        allowed = response.get("Allow", "")
        answer = error_response(
            ApiError(405, f"{request.method} is not taken here: use {allowed or 'another path'}")
        )
        if allowed:
            answer["Allow"] = allowed
        return answer
