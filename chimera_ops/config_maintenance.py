"""The `maintenance:` section: thresholds of `chimera-ops maintenance weekly|monthly`.

Defaults match the operators' checklist (INCIDENTS.md, "Maintenance they scheduled"):

```yaml
maintenance:
  log_max_size: 1GiB          # weekly: a log file over this is critical
  log_paths: []               # extra directories to check
  system_logs: true           # also /var/log (journal, syslog) where readable
  max_age: 30d                # monthly: component logs, bundles, incidents older than this
  leak_window: 7d             # weekly: the agent's memory samples this far back
  memory_sample_interval: 60s # the agent keeps one memory sample per component this often
  rate_limit: 600             # requests/min the exchange allows (the engine may declare its own)
  rate_margin: 500            # requests/min: over this is a warning, over the limit critical
  disk_days_warning: 30       # days until full at the measured growth
  disk_days_critical: 7
  disk_free_critical: 5%      # free space below this is critical whatever the growth
  growth_min_span: 20h        # growth is measured against a run at least this old
  backup_max_age: 26h         # weekly: newest verified backup older than this is a warning
  image_max_age: 30d          # monthly: unused docker images older than this
  audit_pythons: []           # engine interpreters pip-audit checks (chimera-ops' own always)
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from chimera_ops.fields import Duration, Size, StrictModel


class MaintenanceConfig(StrictModel):
    """Thresholds of the weekly and monthly checks (see the module docstring)."""

    log_max_size: Size = 1024**3
    log_paths: list[Path] = Field(default_factory=list)
    system_logs: bool = True  # also the system's journal/syslog directory, where readable
    max_age: Duration = 30 * 86400.0
    leak_window: Duration = 7 * 86400.0
    memory_sample_interval: Duration = 60.0
    rate_limit: int = Field(default=600, ge=1)
    rate_margin: int = Field(default=500, ge=1)
    disk_days_warning: float = Field(default=30.0, gt=0)
    disk_days_critical: float = Field(default=7.0, gt=0)
    disk_free_critical: float = 0.05
    growth_min_span: Duration = 20 * 3600.0
    backup_max_age: Duration = 26 * 3600.0
    image_max_age: Duration = 30 * 86400.0
    audit_pythons: list[Path] = Field(default_factory=list)
    audit_timeout: Duration = 300.0

    @field_validator("disk_free_critical", mode="before")
    @classmethod
    def _percent(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().endswith("%"):
            return float(value.strip()[:-1]) / 100.0
        return value

    @model_validator(mode="after")
    def _check(self) -> MaintenanceConfig:
        if not 0 <= self.disk_free_critical < 1:
            raise ValueError("disk_free_critical must be a fraction in [0, 1) or a percentage")
        if self.rate_margin > self.rate_limit:
            raise ValueError("rate_margin must not exceed rate_limit")
        if self.disk_days_critical > self.disk_days_warning:
            raise ValueError("disk_days_critical must not exceed disk_days_warning")
        return self
