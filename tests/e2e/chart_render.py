"""The Helm chart rendered by Helm's own engine (helm-python-sdk embeds Helm's Go SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "felixpy"


def helm_missing() -> str | None:
    """Why the chart cannot be rendered here, or None."""
    try:
        import helm_python  # noqa: F401
    except ImportError:
        return "helm-python-sdk (Helm's Go SDK) is not installed"
    return None


def render(values: dict[str, Any], *, namespace: str = "kube-system") -> list[dict[str, Any]]:
    """Every object the chart renders with ``values``, in Helm's output order."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        out = chart.render(values=values, name="felixpy", namespace=namespace)
    return [
        d
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    raise LookupError(f"the rendered chart has no {kind} {name}")
