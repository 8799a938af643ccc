"""Writing what people read about a build (the `slmdeploy_write_report` hook): figures formatted as slmdeploy's own
``slmdeploy report`` table formats them, so a plugin's tables and the core's agree digit for digit::

    from slmdeploy.plugin.report import format_figure

    format_figure(0.97431)   # "0.9743"
    format_figure(1234.5)    # "1,234"
    format_figure(0.00012)   # "1.20e-04"
"""

from __future__ import annotations

__all__ = ["format_figure"]


def format_figure(value: float) -> str:
    """Four significant digits, without exponents for the sizes and speeds a report shows."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
