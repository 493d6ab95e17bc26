"""Reading a retention policy from its mapping: full and default policies, and the field named by
each invalid one.
"""

from __future__ import annotations

from typing import Any

import pytest

from backups.retention.durations import Duration, Period
from backups.retention.policy import Policy, PolicyError, SpacingRule, Tier

# -- policy validation --------------------------------------------------------------------------


def test_it_reads_a_full_policy() -> None:
    mapping = {
        "keep_last": 3,
        "keep_hourly": -1,
        "keep_daily": 7,
        "keep_within": "2d",
        "tiers": ["15min:24h", "1h:72h"],
        "rules": ["3.1", "2.15"],
        "retention_days": 30,
        "max_backups": 10,
        "min_keep": 2,
        "max_delete_fraction": 1,
    }
    assert Policy.from_mapping(mapping, timezone="Europe/Berlin") == Policy(
        keep_last=3,
        keep_hourly=-1,
        keep_daily=7,
        keep_within=Duration(days=2),
        tiers=(
            Tier(Period(Duration(minutes=15)), Duration(hours=24)),
            Tier(Period(Duration(hours=1)), Duration(hours=72)),
        ),
        rules=(SpacingRule(3, 1), SpacingRule(2, 15)),
        retention_days=30,
        max_backups=10,
        min_keep=2,
        max_delete_fraction=1.0,
        timezone="Europe/Berlin",
    )


def test_it_reads_a_single_rule_or_tier_given_as_a_string() -> None:
    policy = Policy.from_mapping({"rules": "3.10", "tiers": "1d:14d"})
    assert policy.rules == (SpacingRule(3, 10),)
    assert policy.tiers == (Tier(Period(Duration(days=1)), Duration(days=14)),)
    assert str(policy.rules[0]) == "3.10"
    assert str(policy.tiers[0]) == "1d:14d"


def test_it_has_defaults_for_an_empty_policy() -> None:
    policy = Policy.from_mapping({})
    assert policy == Policy()
    assert policy.min_keep == 1
    assert policy.max_delete_fraction == 0.5
    assert not policy.has_rules


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"keep_daily": 0}, "keep_daily"),
        ({"keep_daily": -2}, "keep_daily"),
        ({"keep_daily": True}, "keep_daily"),
        ({"keep_daily": "7"}, "keep_daily"),
        ({"keep_daily": 7.0}, "keep_daily"),
        ({"keep_last": None}, "keep_last"),
        ({"keep_yearly": 0}, "keep_yearly"),
        ({"retention_days": -1}, "retention_days"),
        ({"retention_days": 0}, "retention_days"),
        ({"max_backups": -1}, "max_backups"),
        ({"min_keep": 0}, "min_keep"),
        ({"keep_within": "2m"}, "keep_within"),
        ({"keep_within": 2}, "keep_within"),
        ({"keep_within": "0d"}, "keep_within"),
        ({"tiers": ["15min"]}, "tiers"),
        ({"tiers": ["24h:7d"]}, "tiers"),
        ({"tiers": ["15m:24h"]}, "tiers"),
        ({"tiers": ["15min:24h:7d"]}, "tiers"),
        ({"tiers": [15]}, "tiers"),
        ({"tiers": {"15min": "24h"}}, "tiers"),
        ({"rules": [3.1]}, "rules"),
        ({"rules": 3.1}, "rules"),
        ({"rules": ["3"]}, "rules"),
        ({"rules": ["0.1"]}, "rules"),
        ({"rules": ["3.x"]}, "rules"),
        ({"rules": ["-3.1"]}, "rules"),
        ({"rules": ["3.1.2"]}, "rules"),
        ({"rules": ["\u00b2.1"]}, "rules"),  # a superscript two: a digit, but not a decimal one
        ({"keep_dayly": 7}, "keep_dayly"),
        ({"timezone": "UTC"}, "timezone"),  # the timezone is the target's, not a rule
        ({"max_delete_fraction": 0}, "max_delete_fraction"),
        ({"max_delete_fraction": 1.5}, "max_delete_fraction"),
        ({"max_delete_fraction": -0.1}, "max_delete_fraction"),
        ({"max_delete_fraction": True}, "max_delete_fraction"),
        ({"max_delete_fraction": "0.5"}, "max_delete_fraction"),
    ],
)
def test_it_names_the_field_of_an_invalid_policy(mapping: dict[str, Any], field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(mapping)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_it_tells_to_quote_a_spacing_rule_given_as_a_number() -> None:
    with pytest.raises(PolicyError, match="quoted"):
        Policy.from_mapping({"rules": [3.1]})


def test_it_says_a_bare_m_is_ambiguous_in_a_policy() -> None:
    with pytest.raises(PolicyError, match="ambiguous"):
        Policy.from_mapping({"keep_within": "30m"})


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "Europe", "", "/etc/localtime", "../UTC"])
def test_it_names_the_timezone_field_for_an_unknown_timezone(timezone: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping({"keep_daily": 7}, timezone=timezone)
    assert caught.value.field == "timezone"


def test_it_names_the_policy_itself_when_it_is_not_a_mapping() -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.from_mapping(["keep_daily", 7])  # type: ignore[arg-type]
    assert caught.value.field == "retention"


@pytest.mark.parametrize("fraction", [0.01, 0.5, 1, 1.0])
def test_it_accepts_a_max_delete_fraction_above_zero_and_at_most_one(fraction: float) -> None:
    assert Policy.from_mapping({"max_delete_fraction": fraction}).max_delete_fraction == fraction
