"""The `procedures:` section: how `restart --safe`, `emergency-stop` and `start --all` behave.

```yaml
procedures:
  settle: 10s            # at most this long for the settle evidence before trading resumes
  settle_passes: 3       # evidence: each component's probes pass this many rounds in a row
  ready_timeout: 2m      # how long one component may take to become ready after its start
  lock:                  # one procedure at a time (restore and maintenance fixes respect it)
    redis_url_env: CHIMERA_REDIS_URL   # or redis_url; neither (and no backup.redis): a file lock
    ttl: 15m             # a Redis lock whose holder died expires after this
```
"""

from __future__ import annotations

from pydantic import Field, model_validator

from chimera_ops.fields import Duration, StrictModel


class LockConfig(StrictModel):
    """Where the procedure lock lives: Redis (SET NX PX + a fencing token) or a file lock."""

    redis_url: str | None = None
    redis_url_env: str | None = None
    ttl: Duration = 900.0
    key: str = "chimera-ops:procedure-lock"

    @model_validator(mode="after")
    def _one_source(self) -> LockConfig:
        if self.redis_url and self.redis_url_env:
            raise ValueError("give 'redis_url' or 'redis_url_env', not both")
        return self


class ProceduresConfig(StrictModel):
    """Timing of the procedures and their lock."""

    settle: Duration = 10.0  # the most the settle step waits for its evidence
    settle_passes: int = Field(default=3, ge=1, le=100)  # probe rounds in a row, fast interval
    ready_timeout: Duration = 120.0
    lock: LockConfig = LockConfig()
