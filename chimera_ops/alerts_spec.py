"""Config of the alert sink (`agent.alerts`): kept apart from alerts.py so that loading the
config does not import the HTTP client."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field

from chimera_ops.fields import Duration, StrictModel

__all__ = ["AlertsConfig", "RateLimitConfig", "WebhookConfig"]


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


class RateLimitConfig(StrictModel):
    """Global token bucket: at most `max` alerts per `per` seconds."""

    max: int = Field(default=10, ge=1)
    per: Duration = 60.0


class AlertsConfig(StrictModel):
    """The `alerts:` config section."""

    webhook: WebhookConfig = WebhookConfig()
    # None disables repeats: an active incident is announced once until resolved.
    repeat_interval: Duration | None = 3600.0
    rate_limit: RateLimitConfig = RateLimitConfig()
