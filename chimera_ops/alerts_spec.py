"""Config of the alert sink (`agent.alerts`): kept apart from alerts.py so that loading the
config does not import the HTTP client."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field

from chimera_ops.fields import Duration, StrictModel

__all__ = ["AlertmanagerConfig", "AlertsConfig", "RateLimitConfig", "WebhookConfig"]


class WebhookConfig(StrictModel):
    """Where alerts go. `url_env` names an env var holding the URL (keeps secrets out of YAML)."""

    url: str | None = None
    url_env: str | None = None
    timeout: Duration = 5.0

    def resolve_url(self, env: Mapping[str, str] | None = None) -> str | None:
        """The URL to post to: `url` if set, else the value of `url_env`, else None (disabled)."""
        if self.url:
            return self.url
        if self.url_env:
            value = (os.environ if env is None else env).get(self.url_env, "").strip()
            return value or None
        return None


class AlertmanagerConfig(StrictModel):
    """Alertmanager's v2 API (`http://127.0.0.1:9093`), posted to the way Prometheus does:
    the firing set re-sent every `resend_interval` with `endsAt` four intervals ahead, so an
    agent that dies lets its alerts expire; a resolution sends `endsAt` = now."""

    url: str | None = None
    url_env: str | None = None
    timeout: Duration = 5.0
    resend_interval: Duration = 60.0  # Prometheus' --rules.alert.resend-delay
    instance: str | None = None  # the `instance` label; default: this host's name
    labels: dict[str, str] = Field(default_factory=dict)  # added to every alert (env: prod)
    runbook_base_url: str = "runbooks"  # runbook_url = <base>/<runbook>.md
    max_queue: int = Field(default=1000, ge=1)  # resolutions kept while it is unreachable

    def resolve_url(self, env: Mapping[str, str] | None = None) -> str | None:
        """The base URL: `url`, else the value of `url_env`, else None (disabled)."""
        return WebhookConfig(url=self.url, url_env=self.url_env).resolve_url(env)


class RateLimitConfig(StrictModel):
    """Global token bucket: at most `max` alerts per `per` seconds."""

    max: int = Field(default=10, ge=1)
    per: Duration = 60.0


class AlertsConfig(StrictModel):
    """The `alerts:` config section."""

    webhook: WebhookConfig = WebhookConfig()
    alertmanager: AlertmanagerConfig = AlertmanagerConfig()
    # None disables repeats: an active incident is announced once until resolved.
    repeat_interval: Duration | None = 3600.0
    rate_limit: RateLimitConfig = RateLimitConfig()
