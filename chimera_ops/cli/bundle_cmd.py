"""`chimera-ops collect-logs`: a redacted support bundle (the procedure is ops/bundle/)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from chimera_ops.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    CliContext,
    emit_json,
    fail,
    json_option,
    pass_cli,
    stderr_console,
    stdout_console,
    unknown_component,
)


def _size(value: str) -> int:
    from chimera_ops.units import parse_size

    try:
        size = parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (e.g. 50MiB, 1GiB, 1048576)") from None
    if size <= 0:
        raise click.BadParameter("must be more than 0 bytes")
    return size


def _window(value: str) -> float | None:
    from chimera_ops.cli.events import parse_since

    now = time.time()
    since = parse_since(value, now)
    return None if since is None else max(0.0, now - since)


@click.command("collect-logs")
@click.option(
    "--since",
    default="24h",
    show_default=True,
    help="Logs, events and audit newer than this ('24h', '30m', or an ISO time).",
)
@click.option(
    "--component",
    "-c",
    "components",
    multiple=True,
    help="Only this component's logs, environment and processes (repeatable).",
)
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for chimera-bundle-<host>-<UTC>.tar.gz.",
)
@click.option(
    "--max-file-size",
    default="50MiB",
    show_default=True,
    help="Cap per log file (the newest part is kept; the cut is in the manifest).",
)
@click.option(
    "--self-test",
    is_flag=True,
    help="Plant canary secrets of every rule in a scratch bundle and check none survives.",
)
@json_option
@pass_cli
def collect_logs(
    cli_ctx: CliContext,
    since: str,
    components: tuple[str, ...],
    out_dir: str,
    max_file_size: str,
    self_test: bool,
    as_json: bool,
) -> None:
    """Write a redacted support bundle: report.md, logs, events, audit, system, services.

    Redaction is always on. Exit 0 when the bundle is written (failed collectors are listed in
    it), 1 when it could not be written, 2 for bad arguments or an unwritable --out.
    """
    if self_test:
        _self_test(as_json)
    window = _window(since)
    cap = _size(max_file_size)
    from chimera_ops.ops.bundle import BundleError, BundleRequest, check_out_dir

    out = Path(out_dir)
    try:
        check_out_dir(out)
    except BundleError as exc:
        fail(str(exc), EXIT_USAGE, "choose a writable directory with --out DIR", as_json)
    cfg = cli_ctx.config()
    for name in components:
        if name not in cfg.components:
            unknown_component(name, list(cfg.components), as_json)
    from chimera_ops.cli.status import direct_status
    from chimera_ops.config_locate import resolve_config_path

    config_path = resolve_config_path(cli_ctx.config_path)
    request = BundleRequest(
        config=cfg,
        out_dir=out,
        config_path=config_path if config_path.exists() else None,
        since_s=window,
        components=list(dict.fromkeys(components)),
        max_file_size=cap,
        direct_status=lambda: direct_status(cli_ctx),
    )
    try:
        result = _run(request, show_progress=not as_json and stderr_console().is_terminal)
    except OSError as exc:
        fail(f"the bundle could not be written: {exc}", EXIT_PROBLEM, None, as_json)
    manifest = result.manifest
    summary = _summary(result.path, manifest)
    if as_json:
        emit_json(summary)
        sys.exit(EXIT_OK)
    _render(summary)
    sys.exit(EXIT_OK)


def _run(request: Any, show_progress: bool) -> Any:
    from chimera_ops.ops.bundle import collect_bundle

    if not show_progress:
        return collect_bundle(request)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = {"status": "agent status", "logs": "logs (redacting)", "parts": "report"}
                tasks[phase] = bar.add_task(label.get(phase, phase), total=max(total, 1))
            bar.update(tasks[phase], completed=done, total=max(total, 1))

        return collect_bundle(request, progress)


def _summary(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    failed = [c for c in manifest["collectors"] if c["status"] != "ok"]
    return {
        "bundle": str(path),
        "size": path.stat().st_size,
        "agent": manifest["agent"],
        "files": len(manifest["files"]),
        "failed_collectors": failed,
        "truncations": manifest["truncations"],
        "log_problems": [
            entry for entry in manifest["logs"] if entry["status"] in ("vanished", "error")
        ],
        "redaction": manifest["redaction"],
        "duration_s": manifest["duration_s"],
    }


def _render(summary: dict[str, Any]) -> None:
    from chimera_ops.units import format_size

    console = stdout_console()
    console.print(
        f"[bold green]bundle[/] {summary['bundle']} ({format_size(summary['size'])}, "
        f"{summary['files']} files, {summary['duration_s']:.1f} s, mode 0600)",
        highlight=False,
    )
    agent = summary["agent"]
    if not agent["running"]:
        console.print(
            f"[yellow]no agent answered[/] ({agent['error']}): status read directly",
            highlight=False,
        )
    for c in summary["failed_collectors"]:
        console.print(
            f"[yellow]collector {c['name']}: {c['status']}[/] {c['error'] or ''}",
            highlight=False,
            markup=True,
        )
    for t in summary["truncations"]:
        console.print(
            f"[yellow]cut[/] {t['source']}: oldest {format_size(t['truncated_bytes'])} left out",
            highlight=False,
        )
    for p in summary["log_problems"]:
        console.print(
            f"[yellow]log[/] {p['source']}: {p['status']} {p.get('note') or ''}", highlight=False
        )
    rules = {k: v for k, v in summary["redaction"]["rules"].items() if v}
    removed = ", ".join(f"{k} {v}" for k, v in rules.items()) or "nothing matched"
    console.print(f"redacted: {summary['redaction']['total']} values ({removed})", highlight=False)
    console.print(
        "check it before sending: tar xzf BUNDLE; read report.md and manifest.json", highlight=False
    )


def _self_test(as_json: bool) -> None:
    from chimera_ops.ops.bundle.selftest import run_self_test

    report = run_self_test()
    if as_json:
        emit_json(report)
    else:
        console = stdout_console()
        for check in report["checks"]:
            mark = "[green]ok[/]" if check["ok"] else "[bold red]LEAK[/]"
            console.print(f"{mark} {check['rule']}: {check['detail']}", highlight=False)
        verdict = (
            "[bold green]no canary survived[/]"
            if report["ok"]
            else "[bold red]a canary survived[/]"
        )
        console.print(
            f"{verdict} ({report['canaries']} canaries, {report['files']} files searched)"
        )
    sys.exit(EXIT_OK if report["ok"] else EXIT_PROBLEM)
