"""Fixtures the maintenance tests share with other suites: the real webhook receiver and the
demo stack (the paper engine as a trading component under the agent)."""

from tests.integration.test_alerts_webhook import receiver
from tests.procedures.conftest import demo, engine_dsn

__all__ = ["demo", "engine_dsn", "receiver"]
