"""Run every benchmark module; each writes bench/results/<name>.md; write the index README.md.

`make bench` runs this. Nothing is skipped silently: a bench whose comparison tool is missing
marks its rows "not installed" and exits non-zero, and so does this runner. A missing optional
module (bench_paper.py) is listed as absent. `--only NAME` runs one module.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine_facts  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
MODULES: list[tuple[str, str, float]] = [
    ("bench_supervision.py", "supervision.md", 420.0),
    ("bench_freeze_leak.py", "freeze_leak.md", 780.0),
    ("bench_paper.py", "paper.md", 600.0),
    ("bench_start.py", "start.md", 420.0),
    ("bench_docker.py", "docker.md", 600.0),
    ("bench_backup.py", "backup.md", 1500.0),
    ("bench_safe_restart.py", "safe_restart.md", 600.0),
    ("bench_bundle.py", "bundle.md", 1200.0),
    ("bench_runbooks.py", "runbooks.md", 600.0),
    ("bench_maintenance.py", "maintenance.md", 900.0),
    ("bench_resilience.py", "resilience.md", 600.0),
]
"""(module, the results file it writes, timeout in seconds)."""


def run_module(module: str, timeout: float) -> tuple[str, float]:
    """Run one bench as a subprocess; return (outcome, seconds)."""
    path = BENCH_DIR / module
    if not path.exists():
        return "absent (module not in the repo)", 0.0
    print(f"== {module}", flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(path)], timeout=timeout, cwd=BENCH_DIR.parent)
    except subprocess.TimeoutExpired:
        return f"TIMED OUT after {timeout:.0f} s", time.monotonic() - t0
    seconds = time.monotonic() - t0
    if proc.returncode == 0:
        return "ok", seconds
    if proc.returncode == 2:
        return "INCOMPLETE (a tool is missing or a part could not run; see its table)", seconds
    return f"FAILED (exit {proc.returncode})", seconds


def previous_outcomes() -> dict[str, tuple[str, float]]:
    """Outcomes recorded in the current index (kept for modules `--only` does not run)."""
    index = RESULTS / "README.md"
    found: dict[str, tuple[str, float]] = {}
    if not index.exists():
        return found
    for line in index.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`bench/"):
            try:
                found[cells[0][7:-1]] = (f"{cells[2]} (earlier run)", float(cells[3]))
            except ValueError:
                continue
    return found


def aims_of(results_file: Path) -> list[str]:
    """The `Aim: ... -> verdict` lines of a results file."""
    if not results_file.exists():
        return []
    return [line[5:] for line in results_file.read_text().splitlines() if line.startswith("Aim: ")]


def main() -> int:
    """Run the modules, write bench/results/README.md; non-zero when anything did not run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run just this module (e.g. bench_supervision.py)")
    parser.add_argument(
        "--index-only", action="store_true", help="run nothing; rewrite the index from its rows"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    outcomes: list[tuple[str, str, str, float]] = []
    earlier = previous_outcomes()
    for module, results_name, timeout in MODULES:
        if args.index_only or (args.only and module != args.only):
            if module in earlier:
                old, secs = earlier[module]
                outcomes.append(
                    (
                        module,
                        results_name,
                        old.replace(" (earlier run) (earlier run)", " (earlier run)"),
                        secs,
                    )
                )
            elif (RESULTS / results_name).exists():
                # Run on its own (not by this runner) yet: list it, its aims are in the file.
                outcomes.append((module, results_name, "run directly (earlier run)", 0.0))
            continue
        outcome, seconds = run_module(module, timeout)
        outcomes.append((module, results_name, outcome, seconds))
    facts = machine_facts()
    lines = [
        "# Benchmarks",
        "",
        f"Run {started} by `bench/run_all.py` (`make bench`).",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "## Benches",
        "",
        "| module | results | outcome | seconds |",
        "|---|---|---|---|",
    ]
    for module, results_name, outcome, seconds in outcomes:
        link = f"[{results_name}]({results_name})" if (RESULTS / results_name).exists() else "-"
        lines.append(f"| `bench/{module}` | {link} | {outcome} | {seconds:.0f} |")
    lines += ["", "## Aims", ""]
    for module, results_name, _, _ in outcomes:
        for aim in aims_of(RESULTS / results_name):
            lines.append(f"- `{module}`: {aim}")
    lines.append("")
    (RESULTS / "README.md").write_text("\n".join(lines))
    bad = [
        o
        for o in outcomes
        if o[2] != "ok" and not o[2].startswith("absent") and not o[2].endswith("(earlier run)")
    ]
    for module, _, outcome, _ in bad:
        print(f"{module}: {outcome}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
