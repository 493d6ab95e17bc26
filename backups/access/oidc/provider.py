"""The provider's endpoints, from ``OIDC_ISSUER``/.well-known/openid-configuration (OpenID
Connect Discovery), read at the first login that needs them and kept for an hour.

Reading them lazily lets every process start while the provider is down; a failed read is not
kept, so the next login tries again. :class:`ProviderUnavailable` says what went wrong in words
fit for the login page (the URL and the reason; the request carries no secret).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from . import SIGN_ALGORITHM, setting


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read or is unusable."""


@dataclass(frozen=True)
class Endpoints:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


CACHE_SECONDS = 3600
_cache: dict[str, tuple[float, Endpoints]] = {}  # issuer -> (when read, endpoints)
_lock = threading.Lock()


def discovery_url(issuer: str) -> str:
    return f"{issuer}/.well-known/openid-configuration"


def endpoints() -> Endpoints:
    """The configured provider's endpoints (cached); ProviderUnavailable when they cannot be read."""
    issuer: str = setting("OIDC_ISSUER")
    now = time.monotonic()
    with _lock:
        cached = _cache.get(issuer)
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    found = read_endpoints(issuer, verify=setting("OIDC_VERIFY_SSL"), timeout=setting("OIDC_TIMEOUT"))
    with _lock:
        _cache[issuer] = (now, found)
    return found


def forget() -> None:
    """Drop the cached endpoints (the next login reads the discovery document again)."""
    with _lock:
        _cache.clear()


def read_endpoints(issuer: str, *, verify: bool | str, timeout: float) -> Endpoints:
    """The endpoints in ``issuer``'s discovery document, checked: the document names the same
    issuer (OpenID Connect Discovery 4.3: anything else is an impostor or a typo), has every
    endpoint the login needs and, when it lists them, offers the code flow, RS256 and PKCE S256."""
    url = discovery_url(issuer)
    try:
        response = requests.get(url, verify=verify, timeout=timeout, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
    except requests.Timeout:
        raise ProviderUnavailable(f"{url} did not answer within {timeout:g} s") from None
    except requests.exceptions.SSLError:
        raise ProviderUnavailable(f"{url}: the provider's certificate could not be verified") from None
    except requests.ConnectionError:
        raise ProviderUnavailable(f"{url} cannot be reached (connection refused or unknown host)") from None
    except requests.HTTPError:
        raise ProviderUnavailable(f"{url} answered HTTP {response.status_code}") from None
    except (requests.RequestException, ValueError):
        raise ProviderUnavailable(f"{url} did not answer with a discovery document (JSON)") from None
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"{url} did not answer with a discovery document (a JSON object)")
    announced = str(document.get("issuer", "")).rstrip("/")
    if announced != issuer:
        raise ProviderUnavailable(
            f"{url} names the issuer {document.get('issuer')!r}, not {issuer!r}: check OIDC_ISSUER"
        )
    _offers(url, document, "response_types_supported", "code")
    _offers(url, document, "id_token_signing_alg_values_supported", SIGN_ALGORITHM)
    _offers(url, document, "code_challenge_methods_supported", "S256")
    fields = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    missing = [name for name in fields if not isinstance(document.get(name), str) or not document[name]]
    if missing:
        raise ProviderUnavailable(f"{url} lacks {', '.join(missing)}")
    return Endpoints(issuer, *(document[name] for name in fields))


def _offers(url: str, document: dict[str, object], field: str, wanted: str) -> None:
    offered = document.get(field)
    if isinstance(offered, list) and wanted not in offered:
        raise ProviderUnavailable(f"{url}: {field} lacks {wanted} (Backupsite needs it)")
