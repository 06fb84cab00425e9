"""The chart cards of the experiment's shared view (what the printed link opens): the fields of MLflow 3.17's
RunsChartsCardConfig, as plain dicts."""

from __future__ import annotations


def _chart(kind: str, key: str) -> dict:
    # The fields of MLflow 3.17's chart cards (RunsChartsCardConfig); a card whose metric no run has is hidden.
    return {
        "uuid": f"chart-{key}",
        "type": kind,
        "runsCountToCompare": 10,
        "metricSectionId": "section-model",
        "deleted": False,
        "isGenerated": True,
        "displayName": key,
        "metricKey": key,
        "selectedMetricKeys": [key],
    }


def _line_chart(key: str) -> dict:
    log = key != "val_accuracy"
    return {
        **_chart("LINE", key),
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": "log" if log else "linear",
        "range": {},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


def _bar_chart(key: str) -> dict:
    return _chart("BAR", key)


def _difference_chart() -> dict:
    # The drawn runs side by side: their params and final metrics, so the chart view names what it draws.
    return {
        **_chart("DIFFERENCE", "params"),
        "compareGroups": ["Parameters", "Model metrics"],
        "chartName": "Parameters and metrics of the runs drawn",
        "showChangeFromBaseline": False,
        "showDifferencesOnly": False,
        "baselineColumnUuid": "",
    }
