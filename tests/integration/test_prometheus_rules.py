"""The Prometheus alerting rules are valid and behave as their promtool unit tests say.

Beyond promtool itself: every rule has a firing case and a healthy (silent) case, and every rule
is over a metric the agent exports and sets, so a rule for a feature that does not exist yet (it
would fire forever on a healthy stack) cannot be shipped again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chimera_ops.agent.exposition import Counter
from chimera_ops.agent.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
# The backup rules' windows are days long: their cases run at a coarser evaluation interval.
BACKUP_RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_backup_test.yml"
ALL_RULE_TESTS = (RULE_TESTS, BACKUP_RULE_TESTS)
RUNBOOKS = {
    "backup-failure",
    "data-restore",
    "server-freeze",
    "db-connection-failure",
    "redis-pool-exhaustion",
    "memory-leak",
    "disk-full",
    "full-restart",
    "maintenance",
}


def promtool() -> str:
    path = shutil.which("promtool")
    # Fail, never skip: without promtool the rules are unchecked.
    assert path, "promtool not found on PATH (apt-get install prometheus)"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_promtool_check_rules() -> None:
    done = run("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests() -> None:
    done = run("test", "rules", *map(str, ALL_RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_severity_summary_and_known_runbook() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert {
        "ComponentDown",
        "ComponentFlapping",
        "LivenessFailing",
        "MemoryLeakForecast",
        "PoolSaturation",
        "TradingHalted",
        "DiskLow",
        "ChimeraAgentDown",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        runbook = rule["annotations"]["runbook"]
        # Templated runbooks choose among known names; every name mentioned must be known.
        mentioned = {name for name in RUNBOOKS if name in runbook}
        assert mentioned, f"{rule['alert']}: runbook {runbook!r} names no known runbook"
        assert runbook.startswith("runbooks/") and runbook.endswith(".md")


# ------------------------------------------------------------------ firing and healthy cases

DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(text: str | int | None) -> float:
    """A Prometheus duration ("1h30m", "90s") in seconds; None (no `for:`) is 0."""
    if text is None:
        return 0.0
    text = str(text)
    parts = DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(int(n) * UNIT_S[u] for n, u in parts)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_cases() -> list[tuple[str, float, list[Any]]]:
    """(alertname, eval time in seconds, expected alerts) of every promtool case."""
    return [
        (case["alertname"], seconds(case["eval_time"]), case.get("exp_alerts") or [])
        for path in ALL_RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def case_problems(
    rule_list: list[dict[str, Any]], cases: list[tuple[str, float, list[Any]]]
) -> list[str]:
    """What is missing for each rule: a case where it fires, a healthy one after its `for:`."""
    longest_for: dict[str, float] = {}
    for rule in rule_list:
        longest_for[rule["alert"]] = max(
            longest_for.get(rule["alert"], 0.0), seconds(rule.get("for"))
        )
    problems = []
    for name, hold in sorted(longest_for.items()):
        if not any(alert == name and expected for alert, _, expected in cases):
            problems.append(f"{name}: no case where it fires")
        # An empty expectation while the rule is still pending proves nothing about healthy.
        if not any(alert == name and not expected and at > hold for alert, at, expected in cases):
            problems.append(f"{name}: no healthy case (exp_alerts: []) after its for: {hold:.0f}s")
    unknown = sorted({alert for alert, _, _ in cases} - set(longest_for))
    problems += [f"{name}: tested but not a rule in alerts.yml" for name in unknown]
    return problems


def test_every_rule_has_a_firing_and_a_healthy_case() -> None:
    """Firing shows the rule works; healthy (after its `for:`) shows it is not always on."""
    cases = rule_cases()
    assert cases, "alerts_test.yml has no alert_rule_test cases"
    assert case_problems(rules(), cases) == []


def test_missing_cases_are_caught() -> None:
    rule_list = [{"alert": "A", "for": "5m"}, {"alert": "B"}]
    cases = [("A", 60.0, [{"exp_labels": {}}]), ("A", 120.0, []), ("C", 60.0, [])]
    assert case_problems(rule_list, cases) == [
        "A: no healthy case (exp_alerts: []) after its for: 300s",  # 120 s is still pending
        "B: no case where it fires",
        "B: no healthy case (exp_alerts: []) after its for: 0s",
        "C: tested but not a rule in alerts.yml",
    ]


# ------------------------------------------------------------------ rules are over real metrics

# Series Prometheus makes itself for each scrape target, with the target labels it attaches.
SCRAPE_SERIES = {"up": ("job", "instance")}
TARGET_LABELS = ("job", "instance")
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)(?![\w:])(\s*\{[^}]*\})?(?!\s*\()")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every series selector in a PromQL expression."""
    bare = STRING.sub('""', expr)
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range and subquery durations
    bare = GROUPING.sub("", bare)  # label lists of by/on/...: not metric names
    found = []
    for match in SELECTOR.finditer(bare):
        if match.group(1) in KEYWORDS:
            continue
        found.append((match.group(1), set(MATCHER.findall(match.group(2) or ""))))
    return found


def exported() -> dict[str, tuple[str, ...]]:
    """Series name -> label names, as the agent's registry exposes them."""
    names = {}
    for spec in METRICS:
        # prometheus_client exposes a counter's samples as <name>_total.
        suffix = "_total" if spec.kind is Counter else ""
        names[f"chimera_{spec.name}{suffix}"] = (*spec.labels, *TARGET_LABELS)
    return {**names, **SCRAPE_SERIES}


def short_names_set_by_the_agent() -> set[str]:
    """Table names quoted somewhere besides their declaration: something sets them."""
    source = "\n".join(p.read_text() for p in (ROOT / "chimera_ops").rglob("*.py"))
    return {spec.name for spec in METRICS if source.count(f'"{spec.name}"') >= 2}


def test_selector_parser_finds_metrics_not_functions_or_labels() -> None:
    """The extraction below is only as good as this: it must see through PromQL syntax."""
    found = selectors(
        'max by (component) (chimera_a{state="fatal", x=~"a|b"}) == 1 or '
        "increase(chimera_b_total[10m]) > 3 and on(pool) chimera_c unless time() - up > 2 * 60"
    )
    assert found == [
        ("chimera_a", {"state", "x"}),
        ("chimera_b_total", set()),
        ("chimera_c", set()),
        ("up", set()),
    ]


def metric_problems(rule_list: list[dict[str, Any]], live: set[str]) -> list[str]:
    """Rules over a series the agent does not export, a label it lacks, or a metric never set."""
    table = exported()
    problems = []
    for rule in rule_list:
        found = selectors(rule["expr"])
        if not found:
            problems.append(f"{rule['alert']}: no metric found in {rule['expr']!r}")
        for metric, labels in found:
            if metric not in table:
                problems.append(f"{rule['alert']}: {metric} is not in agent/metrics.py METRICS")
                continue
            if not labels <= set(table[metric]):
                missing = sorted(labels - set(table[metric]))
                problems.append(f"{rule['alert']}: {metric} has no label(s) {missing}")
            short = metric.removeprefix("chimera_").removesuffix("_total")
            if metric.startswith("chimera_") and short not in live:
                problems.append(f"{rule['alert']}: nothing in chimera_ops sets {metric} yet")
    return problems


def test_every_rule_is_over_a_metric_the_agent_exports_and_sets() -> None:
    live = short_names_set_by_the_agent()
    # The finder must see the metrics the agent does set, or the check is vacuous.
    assert {"component_up", "component_restarts", "probe_success", "trading_halted"} <= live
    assert metric_problems(rules(), live) == []


def test_rules_over_missing_or_unset_metrics_are_caught() -> None:
    live = short_names_set_by_the_agent() - {"disk_free_ratio"}
    rule_list = [
        {"alert": "Made", "expr": "chimera_no_such_metric > 1"},
        {"alert": "Label", "expr": 'chimera_component_up{probe="x"} == 0'},
        {"alert": "Unset", "expr": "chimera_disk_free_ratio < 0.1"},
        {"alert": "Counter", "expr": "chimera_component_restarts > 1"},  # exposed as _total
        {"alert": "Fine", "expr": "increase(chimera_component_restarts_total[5m]) > 3"},
    ]
    assert metric_problems(rule_list, live) == [
        "Made: chimera_no_such_metric is not in agent/metrics.py METRICS",
        "Label: chimera_component_up has no label(s) ['probe']",
        "Unset: nothing in chimera_ops sets chimera_disk_free_ratio yet",
        "Counter: chimera_component_restarts is not in agent/metrics.py METRICS",
    ]
