"""Capacity: exchange rate-limit usage, database sizes and growth, free disk and days to full.

Growth is measured against the figures of the previous run of the same check (the store keeps
every result), so the first run reports sizes and no growth yet.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from chimera_ops.config_maintenance import MaintenanceConfig
from chimera_ops.ops.maintenance.base import Check, Context, Result
from chimera_ops.units import format_size

PEAK = "paper_exchange_requests_peak_per_minute"
LIMIT = "paper_exchange_rate_limit_per_minute"
DAY = 86400.0


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """Unlabelled samples of an engine's /metrics (name -> value)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=timeout).raise_for_status().text
    return {
        sample.name: float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


class RateLimitCheck(Check):
    """Weekly: the engine's peak exchange requests per minute against its limit."""

    name = "rate_limit"
    runbook = "rate-limit.md"

    def decide(self, peaks: dict[str, tuple[float, float]], margin: int) -> Result:
        """Pure: each engine's (peak, declared limit); over the margin warning, over the limit
        critical."""
        worst_name = max(peaks, key=lambda n: peaks[n][0] / peaks[n][1])
        peak, limit = peaks[worst_name]
        safe = min(float(margin), limit)
        threshold = f"peak <= {safe:g}/min (limit {limit:g}/min)"
        data = {n: {"peak_per_minute": p, "limit_per_minute": lim} for n, (p, lim) in peaks.items()}
        value = f"{worst_name}: peak {peak:g}/min"
        if peak > limit:
            return self.result(
                "critical", value, threshold, "over the exchange limit: slow the engine now", data
            )
        if peak > safe:
            return self.result(
                "warning",
                value,
                threshold,
                "over the safety margin: lower the order/cancel rate before the exchange bans",
                data,
            )
        return self.result("ok", value, threshold, "nothing to do", data)

    def run(self, ctx: Context) -> Result:
        cfg = ctx.config.maintenance
        peaks: dict[str, tuple[float, float]] = {}
        errors: list[str] = []
        for name, comp in ctx.config.components.items():
            url = comp.trading.control.http if comp.trading is not None else None
            if not url:
                continue
            try:
                figures = scrape(url.rstrip("/") + "/metrics")
            except Exception as exc:  # noqa: BLE001 - any failure makes the check unknown
                errors.append(f"{name}: /metrics unreachable: {exc}")
                continue
            if PEAK not in figures:
                errors.append(f"{name}: its /metrics has no {PEAK}")
                continue
            peaks[name] = (figures[PEAK], figures.get(LIMIT) or float(cfg.rate_limit))
        if not peaks:
            return self.unknown(
                "; ".join(errors) or "no trading engine with an HTTP control URL",
                f"peak <= {cfg.rate_margin}/min",
            )
        result = self.decide(peaks, cfg.rate_margin)
        if errors:
            result.data["errors"] = errors
        return result


def previous(ctx: Context, check: str) -> tuple[float, dict[str, Any]] | None:
    """(finished_at, data) of this check's newest result with figures that is at least
    `maintenance.growth_min_span` old: growth over the minutes between a cron run and a run by
    hand, extrapolated to a day, would be noise (one backup written looks like a full disk)."""
    from chimera_ops.ops.maintenance.history import last_data

    return last_data(ctx.store, check, before=ctx.now - ctx.config.maintenance.growth_min_span)


class DatabaseSizeCheck(Check):
    """Weekly: size of each PostgreSQL database and its growth since the last run."""

    name = "database_size"
    runbook = "disk-full.md"

    def run(self, ctx: Context) -> Result:
        backup = ctx.config.backup
        if backup is None or backup.postgres is None:
            return self.unknown("no PostgreSQL configured (backup.postgres)")
        from chimera_ops.ops.backup import pg
        from chimera_ops.ops.backup.sets import BackupError

        try:
            dsn = backup.postgres.resolve_dsn()
            conn = pg.connect(dsn, timeout=5)
            try:
                rows = conn.execute(
                    "SELECT datname, pg_database_size(datname) FROM pg_database"
                    " WHERE NOT datistemplate AND datallowconn"
                ).fetchall()
            finally:
                conn.close()
        except (BackupError, ValueError, OSError) as exc:
            return self.unknown(f"PostgreSQL unreachable: {exc}")
        except Exception as exc:  # noqa: BLE001 - psycopg errors: unknown, never ok
            return self.unknown(f"PostgreSQL query failed: {exc}")
        sizes = {str(name): int(size) for name, size in rows}
        return self.decide(sizes, previous(ctx, self.name), ctx.now)

    def decide(
        self, sizes: dict[str, int], before: tuple[float, dict[str, Any]] | None, now: float
    ) -> Result:
        """Pure: total size, and growth per day against the previous run's sizes."""
        total = sum(sizes.values())
        data: dict[str, Any] = {"sizes": sizes, "total_bytes": total}
        growth = ""
        if before is not None and "total_bytes" in before[1] and now > before[0]:
            per_day = (total - before[1]["total_bytes"]) / ((now - before[0]) / DAY)
            data["growth_bytes_per_day"] = per_day
            growth = f", {'+' if per_day >= 0 else '-'}{format_size(abs(per_day))}/day"
        value = f"{format_size(total)} in {len(sizes)} database(s){growth}"
        return self.result("ok", value, "-", "growth feeds the free-disk forecast", data)


class DiskCheck(Check):
    """Weekly: free space where the state and backups live, and days until full."""

    name = "disk_free"
    runbook = "disk-full.md"

    def run(self, ctx: Context) -> Result:
        paths = [ctx.config.agent.state_dir]
        if ctx.config.backup is not None:
            paths.append(ctx.config.backup.dir)
        usage: dict[str, dict[str, int]] = {}
        for path in paths:
            probe = Path(path)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            du = shutil.disk_usage(probe)
            usage[str(path)] = {"total": du.total, "used": du.used, "free": du.free}
        return self.decide(usage, previous(ctx, self.name), ctx.now, ctx.config.maintenance)

    def decide(
        self,
        usage: dict[str, dict[str, int]],
        before: tuple[float, dict[str, Any]] | None,
        now: float,
        cfg: MaintenanceConfig,
    ) -> Result:
        """Pure: the tightest path by free ratio; days until full at the used-space growth
        since the previous run."""
        path = min(usage, key=lambda p: usage[p]["free"] / max(1, usage[p]["total"]))
        figures = usage[path]
        ratio = figures["free"] / max(1, figures["total"])
        data: dict[str, Any] = {"usage": usage}
        days: float | None = None
        old = (before[1].get("usage") or {}).get(path) if before else None
        if before is not None and old and now > before[0]:
            per_day = (figures["used"] - old["used"]) / ((now - before[0]) / DAY)
            data["growth_bytes_per_day"] = per_day
            if per_day > 0:
                days = figures["free"] / per_day
                data["days_until_full"] = days
        threshold = f"free > {cfg.disk_free_critical:.0%}, full in > {cfg.disk_days_warning:g} days"
        value = f"{path}: {format_size(figures['free'])} free ({ratio:.0%})" + (
            f", full in ~{days:.1f} days" if days is not None else ""
        )
        if ratio < cfg.disk_free_critical or (days is not None and days < cfg.disk_days_critical):
            return self.result("critical", value, threshold, "free space now (runbook)", data)
        if days is not None and days < cfg.disk_days_warning:
            return self.result(
                "warning", value, threshold, "plan space: prune old backups and logs", data
            )
        return self.result("ok", value, threshold, "nothing to do", data)
