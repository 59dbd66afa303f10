"""deploy/grafana/chimera-ops.json is a well-formed dashboard over the agent's own metrics.
(That every expression parses and returns data is checked against a real Prometheus in
tests/e2e/test_grafana_dashboard.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from chimera_ops.agent.metrics import METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "chimera-ops.json"
# Metrics with no panel, and why.
NOT_ON_THE_DASHBOARD = {
    "docker_engine_up": "only with docker components; alerted on instead",
}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_datasource_variable_and_every_panel_uses_it() -> None:
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()


def test_ids_unique_and_panels_do_not_overlap() -> None:
    panels = load()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_metric_is_shown_and_every_shown_metric_exists() -> None:
    names = {
        f"chimera_{spec.name}" + ("_total" if spec.kind.__name__ == "Counter" else "")
        for spec in METRICS
    }
    used = {m for expr in expressions(load()) for m in re.findall(r"chimera_[a-z_]+", expr)}
    assert used <= names, f"not exported by the agent: {used - names}"
    exempt = {f"chimera_{k}{s}" for k in NOT_ON_THE_DASHBOARD for s in ("", "_total")}
    missing = {n for n in names if n not in used} - exempt
    assert not missing, f"metrics without a panel: {sorted(missing)}"
