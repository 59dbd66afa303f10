"""chimera-ops: a watchdog agent and operations CLI for a small algorithmic-trading stack."""

__version__ = "0.1.0"
