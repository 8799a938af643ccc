"""``slmdeploy report``: the evaluated variants of the latest build, read from ``build/<variant>/report.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmdeploy.errors import ConfigError
from slmdeploy.execute.publish import REPORT
from slmdeploy.plugin.report import format_figure


def read_reports(build_dir: Path) -> list[dict[str, Any]]:
    reports = []
    for file in sorted(build_dir.glob(f"*/{REPORT}")):
        try:
            reports.append({**json.loads(file.read_text(encoding="utf-8")), "folder": str(file.parent)})
        except ValueError as error:
            raise ConfigError(
                f"the report is damaged ({error})", where=str(file), fix="Run `slmdeploy build` to write it again."
            ) from None
    if not reports:
        raise ConfigError(
            f"no evaluated variant in {build_dir}",
            where=str(build_dir),
            fix='Select evaluators in slmdeploy.toml ([evaluate] plugins = ["benchmark", "quality"]) and run '
            "`slmdeploy build`.",
        )
    return reports


def render_summary(reports: list[dict[str, Any]]) -> str:
    """Every figure of every variant side by side, the gates that failed, and the files to open."""
    variants = [report["variant"] for report in reports]
    units = {name: unit for report in reports for name, unit in report.get("units", {}).items()}
    names = sorted({name for report in reports for name in report["metrics"]})
    rows = [("figure", *variants)]
    rows.append(("status", *(_status(report) for report in reports)))
    for name in names:
        label = f"{name} ({units[name]})" if units.get(name) else name
        rows.append((label, *(_cell(report["metrics"].get(name)) for report in reports)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for report in reports:
        failed = [gate for gate in report["gates"] if not gate["passed"]]
        for gate in failed:
            sign = ">=" if gate["bound"] == "min" else "<="
            lines.append(
                f"{report['variant']}: gate {gate['gate']} failed: measured {_cell(gate['measured'])}, "
                f"needs {sign} {_cell(gate['threshold'])} {gate['unit']}".rstrip()
            )
    lines.append("")
    for report in reports:
        folder = Path(report["folder"])
        files = [folder / "report.md", *sorted((folder / "plots").glob("*.png"))]
        lines.extend(str(file) for file in files if file.is_file())
    return "\n".join(lines)


def _status(report: dict[str, Any]) -> str:
    if report["status"] != "passed":
        return "FAILED gates"
    return f"passed, registered {report['registered']}" if report.get("registered") else "passed"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return format_figure(value)
    return "-" if value is None else str(value)
