"""AlertPolicy: de-dup, repeat, resolve and the rate limit, driven by a fake clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chimera_ops.alerts import Alert, AlertPolicy, AlertsConfig, mask_url


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(repeat: float | None = 3600.0, rate_max: int = 10, per: float = 60.0):
    clock = FakeClock()
    policy = AlertPolicy(repeat_interval=repeat, rate_max=rate_max, rate_per=per, clock=clock)
    return policy, clock


def test_one_send_per_incident_not_per_tick() -> None:
    policy, clock = make()
    decisions = []
    for _ in range(20):
        decisions.append(policy.should_send("engine:liveness", "critical"))
        clock.advance(5)
    assert [d.send for d in decisions].count(True) == 1
    assert decisions[0].reason == "new"
    assert all(d.reason == "duplicate" for d in decisions[1:])


def test_distinct_keys_are_independent() -> None:
    policy, _ = make()
    assert policy.should_send("engine:liveness", "critical")
    assert policy.should_send("postgres:down", "critical")
    assert not policy.should_send("engine:liveness", "critical")


def test_repeat_interval_resends_active_incident() -> None:
    policy, clock = make(repeat=600)
    assert policy.should_send("k", "warning")
    clock.advance(599)
    assert not policy.should_send("k", "warning")
    clock.advance(1)
    decision = policy.should_send("k", "warning")
    assert decision and decision.reason == "repeat"
    clock.advance(10)
    assert not policy.should_send("k", "warning")  # the repeat restarted the interval


def test_no_repeat_when_disabled() -> None:
    policy, clock = make(repeat=None)
    assert policy.should_send("k", "warning")
    clock.advance(10 * 86400)
    assert not policy.should_send("k", "warning")


def test_escalation_is_sent_deescalation_is_not() -> None:
    policy, _ = make()
    assert policy.should_send("k", "warning")
    decision = policy.should_send("k", "critical")
    assert decision and decision.reason == "escalated"
    assert not policy.should_send("k", "warning")
    assert not policy.should_send("k", "critical")


def test_resolve_once_and_only_for_announced_incidents() -> None:
    policy, _ = make()
    assert policy.should_send("never-fired", "resolved").reason == "not-active"
    assert policy.should_send("k", "critical")
    decision = policy.should_send("k", "resolved")
    assert decision and decision.reason == "resolved"
    assert not policy.should_send("k", "resolved")
    # The same key firing again after the resolve is a new incident.
    assert policy.should_send("k", "critical").reason == "new"


def test_forget_makes_the_alert_retry() -> None:
    policy, _ = make()
    assert policy.should_send("k", "critical")
    policy.forget("k")  # the POST failed
    assert policy.should_send("k", "critical")


def test_unknown_severity_is_an_error() -> None:
    policy, _ = make()
    with pytest.raises(ValueError, match="unknown severity"):
        policy.should_send("k", "info")


def test_rate_limit_drops_excess_and_counts_distinct_alerts() -> None:
    policy, clock = make(rate_max=3, per=60)
    sent = [policy.should_send(f"k{i}", "critical").send for i in range(5)]
    assert sent == [True, True, True, False, False]
    # The same dropped keys on the next ticks are not counted again.
    for _ in range(3):
        clock.advance(1)
        assert policy.should_send("k3", "critical").reason == "rate-limited"
    assert policy.dropped_total == 2
    assert policy.take_summary() is None  # the bucket is still empty


def test_summary_once_after_refill_and_late_delivery_reported() -> None:
    policy, clock = make(rate_max=2, per=60)
    for key in ("a", "b", "c", "d"):
        policy.should_send(key, "critical")
    clock.advance(30)  # one token back
    assert policy.should_send("c", "critical").reason == "new"  # delivered late
    assert policy.take_summary() is None  # not full yet
    clock.advance(60)
    summary = policy.take_summary()
    assert summary is not None
    assert summary.dropped == 2
    assert summary.keys == ("d",)
    assert summary.delivered_late == ("c",)
    assert "2 alerts suppressed" in summary.text()
    assert policy.take_summary() is None  # one summary per episode
    clock.advance(600)
    assert policy.take_summary() is None


def test_resolve_is_not_rate_limited() -> None:
    policy, _ = make(rate_max=1, per=3600)
    assert policy.should_send("k", "critical")
    assert not policy.should_send("other", "critical")  # bucket empty
    assert policy.should_send("k", "resolved")


def test_clock_stepping_back_adds_no_tokens() -> None:
    policy, clock = make(rate_max=1, per=60)
    assert policy.should_send("a", "warning")
    clock.advance(-3600)
    assert not policy.should_send("b", "warning")


def test_config_defaults_and_strictness() -> None:
    config = AlertsConfig.model_validate(
        {"webhook": {"url_env": "HOOK", "timeout": "2s"}, "rate_limit": {"per": "1m"}}
    )
    assert config.repeat_interval == 3600.0
    assert config.rate_limit.max == 10 and config.rate_limit.per == 60.0
    assert config.webhook.timeout == 2.0
    assert config.webhook.resolve_url({"HOOK": " https://h/x "}) == "https://h/x"
    assert config.webhook.resolve_url({}) is None
    with pytest.raises(ValidationError):
        AlertsConfig.model_validate({"webhook": {"uri": "x"}})
    with pytest.raises(ValidationError):
        AlertsConfig.model_validate({"rate_limit": {"max": 0}})


def test_mask_url_hides_path_and_credentials() -> None:
    url = "https://user:pw@hooks.slack.com:8443/services/T000/B000/SECRETTOKEN?x=1"
    masked = mask_url(url)
    assert masked == "https://hooks.slack.com:8443/***"
    assert "SECRET" not in masked and "pw" not in masked


def test_payload_shape_and_redaction() -> None:
    alert = Alert(
        key="postgres:down",
        component="postgres",
        severity="critical",
        summary="cannot connect to postgresql://app:hunter22@db/app",
        details={"dsn": "postgresql://app:hunter22@db/app", "n": 3},
        at=0.0,
        host="h1",
    )
    payload = alert.to_payload()
    assert set(payload) >= {"text", "key", "component", "severity", "summary", "details", "at"}
    assert payload["at"] == "1970-01-01T00:00:00+00:00"
    assert payload["text"].startswith("[CRITICAL] postgres:")
    assert "hunter22" not in str(payload)
    assert payload["details"]["n"] == 3
