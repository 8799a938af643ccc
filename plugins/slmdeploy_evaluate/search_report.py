"""A ``[quantize] search`` in ``report.md`` and ``plots/search.png``: every candidate's figures side by side, and
size and decode speed against top-1 agreement with the chosen candidate marked (the Pareto view)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FIGURES = ("top1_agreement", "mean_kl", "size_mb", "decode_tokens_per_s")


def candidates(everyone: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reports of one search's candidates, in its order (cheapest first)."""
    searched = [item for item in everyone if item["report"].get("search")]
    if not searched:
        return []
    order = searched[0]["report"]["search"]["candidates"]
    return sorted(searched, key=lambda item: order.index(item["report"]["variant"]))


def search_table(everyone: Sequence[dict[str, Any]], cell: Callable[[Any], str]) -> list[str]:
    found = candidates(everyone)
    if not found:
        return []
    search = found[0]["report"]["search"]
    targets = ", ".join(f"{key} {value}" for key, value in search["targets"].items() if value is not None)
    chosen = search["chosen"] or "none (no candidate met the targets)"
    lines = ["## Quantization search", "", f"Targets: {targets}; prefer: {search['prefer']}; chosen: **{chosen}**.", ""]
    lines += ["| candidate | " + " | ".join(FIGURES) + " | status | what it changes |", "|" + "---|" * 7]
    for item in found:
        report = item["report"]
        mark = " (chosen)" if report["variant"] == search["chosen"] else ""
        figures = " | ".join(cell(report["metrics"].get(name)) for name in FIGURES)
        lines.append(f"| {report['variant']}{mark} | {figures} | {report['status']} | {report['search']['note']} |")
    return [*lines, ""]


def pareto_plot(everyone: Sequence[dict[str, Any]], file: Path, plt: Any, save: Callable[..., Path]) -> Path | None:
    found = [item for item in candidates(everyone) if "top1_agreement" in item["report"]["metrics"]]
    if not found:
        return None
    search = found[0]["report"]["search"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, name, label in (
        (axes[0], "size_mb", "package size (MB)"),
        (axes[1], "decode_tokens_per_s", "decode speed (tokens/s, slowest prompt length)"),
    ):
        for item in found:
            metrics, variant = item["report"]["metrics"], item["report"]["variant"]
            if metrics.get(name) is None:
                continue
            chosen = variant == search["chosen"]
            ax.scatter(
                metrics["top1_agreement"],
                metrics[name],
                s=120 if chosen else 40,
                marker="*" if chosen else "o",
                color="tab:red" if chosen else ("tab:blue" if item["report"]["status"] == "passed" else "tab:gray"),
                zorder=3,
            )
            ax.annotate(variant + (" (chosen)" if chosen else ""), (metrics["top1_agreement"], metrics[name]))
        if search["targets"].get("min_top1") is not None:
            ax.axvline(search["targets"]["min_top1"], color="tab:green", linestyle="--", label="min_top1")
        if name == "size_mb" and search["targets"].get("max_size_mb") is not None:
            ax.axhline(search["targets"]["max_size_mb"], color="tab:orange", linestyle="--", label="max_size_mb")
        ax.set_xlabel("top-1 agreement with the source (fraction)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    figure.suptitle("Quantization search: the candidates (gray: missed a target or gate; red star: deployed)")
    return save(figure, file, plt)
