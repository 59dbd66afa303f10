"""Config of the trading control contract: how chimera-ops halts and resumes an engine.

```yaml
engine:
  trading:
    control: {http: "http://127.0.0.1:8701", token_env: CHIMERA_CONTROL_TOKEN}
    drain_timeout: 30s
```
or a command transport (argv lists, no shell), each printing the state JSON on stdout:
```yaml
    control: {command: {state: [...], halt: [...], resume: [...]}}
```
"""

from __future__ import annotations

from pydantic import Field, model_validator

from chimera_ops.fields import Duration, StrictModel


class CommandTransport(StrictModel):
    """argv lists (no shell) for each call of the contract."""

    state: list[str] = Field(min_length=1)
    halt: list[str] = Field(min_length=1)
    resume: list[str] = Field(min_length=1)


class ControlConfig(StrictModel):
    """Exactly one transport: `http` (base URL of the engine) or `command`."""

    http: str | None = None
    command: CommandTransport | None = None
    token_env: str | None = None
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _one_transport(self) -> ControlConfig:
        if (self.http is None) == (self.command is None):
            raise ValueError("set exactly one of 'http' (engine base URL) or 'command'")
        if self.http is not None and not self.http.startswith(("http://", "https://")):
            raise ValueError(f"'http' must be a URL like http://127.0.0.1:8701, got {self.http!r}")
        return self


class TradingConfig(StrictModel):
    """A component that is a trading engine and can be quiesced."""

    control: ControlConfig
    drain_timeout: Duration = 30.0
