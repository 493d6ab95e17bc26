"""The provider's claims: a user's name, email and groups (the names of their Django groups)."""

from __future__ import annotations

from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


class GroupsClaimValidator(OAuth2Validator):
    # Which scope releases each claim; groups come with openid itself, as Keycloak's
    # client-dedicated mappers do.
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "openid"}

    def get_additional_claims(self) -> dict[str, Any]:
        # Request-agnostic (callables): the discovery document then lists the claims.
        return {
            "preferred_username": lambda request: request.user.username,
            "given_name": lambda request: request.user.first_name,
            "family_name": lambda request: request.user.last_name,
            "email": lambda request: request.user.email,
            "groups": lambda request: sorted(request.user.groups.values_list("name", flat=True)),
        }
