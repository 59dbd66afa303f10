"""Journaled procedures: `restart --safe`, `emergency-stop`, `start --all` (ARCHITECTURE.md,
"restart --safe"). The steps and decisions live here (no click, no rich); the agent runs them
as jobs (agent/jobs.py) so that a dropped terminal never leaves one half-done."""
