"""docs/prometheus-alerts.yaml: valid for Prometheus (`promtool check rules`), its alerts fire on
the series they are meant for (`promtool test rules` with tests/prometheus/alerts_test.yaml),
and every metric it names is one /metrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from backups.health.metrics import CatalogFacts, metric_families

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "docs" / "prometheus-alerts.yaml"
RULE_TESTS = REPO / "tests" / "prometheus" / "alerts_test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus: make setup)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_it_ships_alert_rules_that_promtool_accepts():
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


@needs_promtool
def test_it_fires_the_late_failing_shrunken_and_unverified_alerts_on_the_series_they_watch():
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_names_only_metrics_that_the_site_exports():
    exported = set()
    for family in metric_families(CatalogFacts(targets={}, runs={}, storage_bytes={})):
        exported.add(f"{family.name}_total" if family.type == "counter" else family.name)
    named = set(re.findall(r"\bbackupsite_[a-z_]+\b", RULES.read_text()))
    assert named, "the rules name no metric"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
