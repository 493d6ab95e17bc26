"""Seed the provider's database: ``python -m tests.servers.oidc_provider.seed < seed.json``
(with the provider's settings), after ``migrate``. The JSON names one client and the users::

    {"client": {"client_id": ..., "client_secret": ..., "redirect_uris": [...], "name": ...},
     "users": [{"username": ..., "password": ..., "email": ..., "first_name": ...,
                "last_name": ..., "groups": [...]}]}

The client is confidential, uses the authorization-code grant and signs ID tokens with RS256;
its secret is stored hashed, as a real provider does.
"""

from __future__ import annotations

import json
import sys

import django


def seed(data: dict) -> None:
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import Application

    for entry in data["users"]:
        user = User.objects.create_user(
            entry["username"],
            email=entry.get("email", ""),
            password=entry["password"],
            first_name=entry.get("first_name", ""),
            last_name=entry.get("last_name", ""),
        )
        user.groups.set(Group.objects.get_or_create(name=name)[0] for name in entry.get("groups", []))
    client = data["client"]
    Application.objects.create(
        name=client["name"],
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=" ".join(client["redirect_uris"]),
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=client.get("skip_authorization", False),
    )


if __name__ == "__main__":
    django.setup()
    seed(json.load(sys.stdin))
