"""The Grafana dashboard charts the metrics the worker and the API really export, and all of them."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from agents import metrics as worker_metrics
from api.metrics import ApiMetrics
from tests.support import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "jobstream-dashboard.json"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def exported() -> dict[str, set[str]]:
    """Family name → the sample names it exposes, for every jobstream metric of both processes."""
    collectors: list[Any] = [m for m in vars(worker_metrics).values() if isinstance(m, MetricWrapperBase)]
    collectors += [m for m in vars(ApiMetrics(process_metrics=False)).values() if isinstance(m, MetricWrapperBase)]
    families = [family for collector in collectors for family in collector.describe()]
    return {family.name: {family.name + suffix for suffix in SUFFIXES[family.type]} for family in families}


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_every_charted_metric_exists() -> None:
    known = set().union(*exported().values())
    used = {name for expr in expressions() for name in re.findall(r"jobstream_[a-z_]+", expr)}
    assert used, "no jobstream metric charted"
    assert used <= known, f"charted but not exported: {sorted(used - known)}"


def test_every_exported_metric_is_charted() -> None:
    used = {name for expr in expressions() for name in re.findall(r"jobstream_[a-z_]+", expr)}
    missing = [family for family, samples in exported().items() if not samples & used]
    assert not missing, f"exported but not on the dashboard: {missing}"
