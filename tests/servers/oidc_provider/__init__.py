"""A real OpenID Connect provider for the oidc tests: a small Django project on
django-oauth-toolkit (OIDC on, PKCE required, RS256 ID tokens, a ``groups`` claim).

``tests/servers/oidc.py`` migrates it into a SQLite file in a temp directory, seeds it
(:mod:`.seed`: users with groups, one confidential client) and serves it with ``runserver``
on a free loopback port. :mod:`.client_urls` is Backupsite's URL configuration with the oidc
mode's URLs, for tests that turn the mode on after the test settings loaded.
"""
