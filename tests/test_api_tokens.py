"""Personal API tokens: hashed at rest, shown once, expiring, revocable, narrowed by a scope tag
and never wider than their user; their use recorded at most once a minute; the command and the
admin pages that make them."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from backups.access import tokens
from backups.models import ApiToken, AuditEvent, Role, RoleGrant

pytestmark = [pytest.mark.django_db, pytest.mark.catalog]
TOKEN = re.compile(r"bks_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def person(name: str, role: str = "") -> User:
    user = User.objects.create_user(name, password="x", is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def every_stored_value() -> str:
    """Every column of every token row, as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiToken._meta.db_table}")
        return repr(cursor.fetchall())


def test_it_stores_only_the_sha256_of_the_token():
    row, clear = tokens.create_token(person("ann", "Operator"), name="ci")
    assert TOKEN.fullmatch(clear)
    _, key_id, secret = clear.split("_", 2)  # the secret is url-safe base64: it may hold "_" too
    assert row.key_id == key_id
    assert row.digest == hashlib.sha256(clear.encode()).hexdigest()
    stored = every_stored_value()
    assert clear not in stored and secret not in stored
    assert tokens.authenticate(clear) == row


def test_it_expires_in_90_days_unless_told():
    row, _ = tokens.create_token(person("ann"))
    assert abs(row.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    assert tokens.parse_expiry("12h") - timezone.now() > timedelta(hours=11, minutes=59)
    day = (timezone.now() + timedelta(days=10)).date()
    assert tokens.parse_expiry(day.isoformat()).date() == day


@pytest.mark.parametrize(
    ("text", "says"),
    [("yesterday", "not a lifetime"), ("2001-01-01", "in the past"), ("5000d", "at most 365 days")],
)
def test_it_refuses_an_expiry_naming_the_fix(text, says):
    with pytest.raises(tokens.TokenProblem, match=says) as refused:
        tokens.parse_expiry(text)
    assert refused.value.field == "expires"


def test_it_refuses_a_bad_scope_and_creates_nothing():
    with pytest.raises(tokens.TokenProblem, match="is not a tag"):
        tokens.create_token(person("ann"), scope="Not A Tag")
    assert not ApiToken.objects.exists()


def test_it_tells_missing_unknown_expired_and_revoked_apart():
    user = person("ann", "Viewer")
    row, clear = tokens.create_token(user)
    assert tokens.authenticate("") == tokens.Refusal.MISSING
    assert tokens.authenticate("bks_00000000_" + "A" * 43) == tokens.Refusal.UNKNOWN
    assert tokens.authenticate("not even a token") == tokens.Refusal.UNKNOWN
    forged = f"bks_{row.key_id}_" + "A" * 43  # the right key id, another secret
    assert tokens.authenticate(forged) == tokens.Refusal.UNKNOWN
    later = timezone.now() + timedelta(days=91)
    assert tokens.authenticate(clear, now=later) == tokens.Refusal.EXPIRED
    assert tokens.revoke(row) is True
    assert tokens.revoke(row) is False  # once
    assert tokens.authenticate(clear) == tokens.Refusal.REVOKED
    assert tokens.authenticate(forged) == tokens.Refusal.UNKNOWN  # revoked or not: no secret, no news


def test_it_never_gives_more_than_its_user_and_a_scope_narrows_it(sqlite_target, copy_target):
    sqlite_target.tags = ["shop"]
    sqlite_target.save()
    operator = person("olga", "Operator")
    everywhere, _ = tokens.create_token(operator)
    shop_only, _ = tokens.create_token(operator, scope="shop")
    assert tokens.token_can(everywhere, "run", copy_target) and tokens.token_can(
        everywhere, "run", sqlite_target
    )
    assert tokens.token_can(shop_only, "run", sqlite_target)
    assert not tokens.token_can(shop_only, "run", copy_target)  # not tagged shop
    assert not tokens.token_can(shop_only, "run", None)  # nothing beyond the tag's targets
    assert not tokens.token_can(shop_only, "restore", sqlite_target)  # an Operator may not restore
    scoped_user = person("sam")
    RoleGrant.objects.create(user=scoped_user, role=Role.RESTORER, tag="shop")
    token, _ = tokens.create_token(scoped_user)
    assert tokens.token_can(token, "restore", sqlite_target)
    assert not tokens.token_can(token, "view", copy_target)
    operator.is_active = False
    operator.save()
    everywhere.user.refresh_from_db()
    assert not tokens.token_can(everywhere, "view", sqlite_target)


def test_it_records_use_at_most_once_a_minute():
    row, _ = tokens.create_token(person("ann"))
    now = timezone.now()
    assert tokens.record_use(row, "192.0.2.7", now) is True
    assert tokens.record_use(row, "192.0.2.8", now + timedelta(seconds=30)) is False
    row.refresh_from_db()
    assert (row.last_used_at, row.last_used_address) == (now, "192.0.2.7")
    assert tokens.record_use(row, "192.0.2.9", now + timedelta(seconds=61)) is True
    row.refresh_from_db()
    assert row.last_used_address == "192.0.2.9"


def test_it_audits_creation_and_revocation_without_the_token():
    row, clear = tokens.create_token(person("ann"), name="deploy", scope="shop")
    tokens.revoke(row, by=tokens.Actor(username="cli:root", auth_method="cli"))
    events = list(AuditEvent.objects.filter(object_type="backups.apitoken").order_by("id"))
    assert [event.action for event in events] == ["token.create", "token.revoke"]
    assert events[0].username == "ann" and events[1].username == "cli:root"
    assert events[1].auth_method == "cli"
    assert all(clear not in json.dumps(event.details) for event in events)


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("api_token", *args, stdout=out)
    return out.getvalue()


def test_it_creates_lists_and_revokes_from_the_command_line():
    person("ann", "Operator")
    shown = run_command("create", "--user", "ann", "--expires", "30d", "--scope", "shop", "--name", "ci")
    clear = TOKEN.search(shown)
    assert clear is not None and "shown only this once" in shown
    row = ApiToken.objects.get()
    assert (row.name, row.scope, tokens.authenticate(clear.group())) == ("ci", "shop", row)
    assert timedelta(days=29) < row.expires_at - timezone.now() <= timedelta(days=30)
    listing = run_command("list", "--json")
    assert clear.group() not in listing and row.digest not in listing
    assert json.loads(listing)[0]["state"] == "active"
    assert "Revoked" in run_command("revoke", str(row.pk))
    assert "already revoked" in run_command("revoke", str(row.pk))
    assert tokens.authenticate(clear.group()) == tokens.Refusal.REVOKED
    assert AuditEvent.objects.filter(username__startswith="cli", object_type="backups.apitoken").count() == 2


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["create", "--user", "nobody"], "--user"),
        (["create", "--user", "ann", "--expires", "soon"], "--expires"),
        (["create", "--user", "ann", "--scope", "A B"], "--scope"),
        (["revoke", "999"], "ID"),
    ],
)
def test_it_names_the_option_and_the_fix_on_bad_input(args, names):
    person("ann")
    with pytest.raises(CommandError, match=names):
        run_command(*args)
    assert not ApiToken.objects.exists()


def test_it_shows_a_new_token_once_in_the_admin_and_never_its_digest():
    user = person("ann", "Operator")
    client = Client()
    client.force_login(user)
    assert client.get("/admin/backups/apitoken/add/").status_code == 200
    page = client.post("/admin/backups/apitoken/add/", {"name": "ci", "expires": "30d", "scope": ""})
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    clear = TOKEN.search(page.content.decode())
    assert clear is not None
    row = ApiToken.objects.get()
    assert row.user == user and tokens.authenticate(clear.group()) == row
    for url in ("/admin/backups/apitoken/", f"/admin/backups/apitoken/{row.pk}/change/"):
        shown = client.get(url).content.decode()
        assert row.key_id in shown and row.digest not in shown and clear.group() not in shown


def test_it_lets_only_administrators_make_or_see_tokens_of_others():
    viewer, admin_user = person("vic", "Viewer"), person("ada", "Administrator")
    theirs, _ = tokens.create_token(admin_user, name="admins-own")
    client = Client()
    client.force_login(viewer)
    # A Viewer cannot choose another user: the field is not there, the token is theirs.
    client.post("/admin/backups/apitoken/add/", {"name": "mine", "expires": "1d", "user": admin_user.pk})
    assert ApiToken.objects.get(name="mine").user == viewer
    listing = client.get("/admin/backups/apitoken/").content.decode()
    assert "mine" in listing and "admins-own" not in listing
    assert client.get(f"/admin/backups/apitoken/{theirs.pk}/change/").status_code in (302, 403)
    client.post("/admin/backups/apitoken/", {"action": "revoke_tokens", "_selected_action": [theirs.pk]})
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    admin_client = Client()
    admin_client.force_login(admin_user)
    admin_client.post("/admin/backups/apitoken/add/", {"name": "for-vic", "expires": "1d", "user": viewer.pk})
    assert ApiToken.objects.get(name="for-vic").user == viewer
    mine = ApiToken.objects.get(name="mine")
    admin_client.post("/admin/backups/apitoken/", {"action": "revoke_tokens", "_selected_action": [mine.pk]})
    mine.refresh_from_db()
    assert mine.revoked_at is not None
