"""deploy/grafana/longdoc.json: a dashboard Grafana can import, whose every query names
metrics Longdoc defines, and which shows each of them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from service.metrics.broker import GAUGES as BROKER_GAUGES
from service.metrics.definitions import DEFINED
from service.metrics.scrape import GAUGES

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "longdoc.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def defined_samples() -> dict[str, str]:
    """Each sample name a PromQL query may use, with the family it belongs to."""
    out = {name: name for name in (*GAUGES, *BROKER_GAUGES)}
    for metric in DEFINED:
        for family in metric.describe():
            for suffix in _SUFFIXES[family.type]:
                out[family.name + suffix] = family.name
    return out


def panels() -> list[dict[str, Any]]:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] == "Longdoc" and dash["uid"] == "longdoc"
    assert isinstance(dash["schemaVersion"], int)
    found: list[dict[str, Any]] = dash["panels"]
    return found


def test_dashboard_is_grafana_shaped() -> None:
    found = panels()
    assert len({p["id"] for p in found}) == len(found)
    for p in found:
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        assert p["type"] in ("timeseries", "stat", "gauge", "bargauge", "table"), p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), p["title"]


def test_every_query_names_defined_metrics_and_every_metric_is_shown() -> None:
    known = defined_samples()
    shown = set()
    for p in panels():
        for target in p["targets"]:
            names = set(re.findall(r"\blongdoc_[a-z0-9_]+", target["expr"]))
            assert names, (p["title"], target["expr"])
            unknown = names - known.keys()
            assert not unknown, (p["title"], unknown)
            shown |= {known[n] for n in names}
    assert shown == set(known.values())
