"""``report.md`` and the plots of every evaluated variant, from their ``report.json`` and evaluator files."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slmdeploy.plugin.report import format_figure
from slmdeploy_evaluate.search_report import pareto_plot, search_table

PLOTS = "plots"


def write_reports(reports: Sequence[Mapping[str, Any]]) -> None:
    data = [_load(report) for report in reports]
    for item in data:
        folder = Path(item["report"]["folder"])
        plots = _plots(item, data, folder / PLOTS)
        _atomic_text(folder / "report.md", _markdown(item, plots, data))


def _load(report: Mapping[str, Any]) -> dict[str, Any]:
    folder = Path(report["folder"])
    found: dict[str, Any] = {"report": report}
    for name in ("benchmark", "quality"):
        file = folder / f"{name}.json"
        found[name] = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
    return found


def _markdown(item: dict[str, Any], plots: list[Path], everyone: list[dict[str, Any]]) -> str:
    report = item["report"]
    lines = [f"# {report['project']} {report['variant']}: {report['status']}", ""]
    if report.get("registered"):
        lines += [f"Registered as `{report['registered']}`.", ""]
    lines += _gates(report) + _figures(report) + _benchmark(item["benchmark"]) + _flagged(report)
    lines += _quality(item["quality"]) + search_table(everyone, _cell)
    lines += ["## Plots", ""] + [f"![{plot.stem}](plots/{plot.name})" for plot in plots] + [""]
    if not plots and importlib.util.find_spec("matplotlib") is None:
        lines += ["No plots: they need matplotlib (`pip install slmdeploy[evaluate]`).", ""]
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return [*lines, ""]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return format_figure(value)
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _gates(report: Mapping[str, Any]) -> list[str]:
    if not report["gates"]:
        return ["No gates are set ([evaluate.gates]).", ""]
    rows = [
        (
            gate["gate"],
            gate["measured"],
            f"{'>=' if gate['bound'] == 'min' else '<='} {gate['threshold']:g} {gate['unit']}",
            "ok" if gate["passed"] else "**FAILED**",
        )
        for gate in report["gates"]
    ]
    return ["## Gates", "", *_table(("gate", "measured", "threshold", ""), rows)]


def _figures(report: Mapping[str, Any]) -> list[str]:
    units = report.get("units", {})
    rows = [(name, value, units.get(name, "")) for name, value in sorted(report["metrics"].items())]
    return ["## Figures", "", *_table(("figure", "value", "unit"), rows)]


def _benchmark(bench: dict[str, Any] | None) -> list[str]:
    if bench is None:
        return []
    lines = ["## Speed by prompt length (medians)", ""]
    header = ("runtime", "prompt tokens", "TTFT ms", "prompt tok/s", "decode tok/s", "CPU %")
    rows = []
    for label in ("package", "source"):
        for row in (bench[label] or {}).get("lengths", []):
            rows.append(
                (
                    label,
                    row["prompt_tokens"],
                    row["ttft_ms"],
                    row["prompt_tokens_per_s"],
                    row["decode_tokens_per_s"],
                    row["cpu_percent"],
                )
            )
    lines += _table(header, rows)
    memory = [
        (label, bench[label]["load_s"], bench[label]["rss_loaded_mb"], bench[label]["peak_rss_mb"])
        for label in ("package", "source")
        if bench[label]
    ]
    lines += _table(("runtime", "load s", "RSS loaded MB", "peak RSS MB"), memory)
    lines += [f"Package size: {bench['size_mb']:.1f} MB. Source: the `[source]` model in PyTorch, float32.", ""]
    return lines + _bound(bench) + _sweep(bench)


def _bound(bench: dict[str, Any]) -> list[str]:
    """Decode speed against the memory-bandwidth bound (`slmdeploy_evaluate.bound`)."""
    bound = bench.get("bound")
    if not bound:
        return []
    title = f"## Decode against the bytes bound ({bound['bandwidth_gb_s']:.1f} GB/s read, {bench['threads']} threads)"
    lines = [title, ""]
    rows = [(row["prompt_tokens"], row["step_mb"], f"{row['fraction']:.0%}") for row in bound["lengths"]]
    lines += _table(("prompt tokens", "MB read per decode step", "decode speed / bytes-bound speed"), rows)
    parts = bound["weights_by_reader_mb"].items()
    readers = ", ".join(f"{kind} {size:.1f} MB" for kind, size in parts if size >= 0.05)
    kv = bound["kv_bytes_per_position"] / 1e3
    note = f"Weights read per step, by the operator reading them: {readers}; KV cache {kv:.1f} kB per position."
    return [*lines, note, ""]


def _sweep(bench: dict[str, Any]) -> list[str]:
    """The package's speed by thread count (``thread_sweep``); it ran with ``[runtime] threads``."""
    sweep = bench.get("sweep") or []
    if not sweep:
        return []
    lines = [f"## Speed by thread count (the package runs with {bench['threads']})", ""]
    header = ("threads", f"decode tok/s at {sweep[0]['decode_prompt_tokens']} tokens", "TTFT ms")
    rows = [(row["threads"], row["decode_tokens_per_s"], row["ttft_ms"]) for row in sweep]
    lines += _table(header, rows)
    return [*lines, f"TTFT at the {sweep[0]['ttft_prompt_tokens']}-token prompt.", ""]


def _flagged(report: Mapping[str, Any]) -> list[str]:
    benchmark = report["evaluators"].get("benchmark")
    if not benchmark:
        return []
    flagged = benchmark.get("flagged_lengths") or []
    if not flagged:
        return ["Decode speed stays within the allowed drop (max_decode_drop) at every prompt length.", ""]
    lengths = ", ".join(str(length) for length in flagged)
    return [f"**Decode speed falls more than the allowed drop (max_decode_drop) at {lengths} tokens.**", ""]


def _quality(quality: dict[str, Any] | None) -> list[str]:
    if quality is None:
        return []
    fidelity = quality["fidelity"]
    lines = ["## Fidelity to the source model", ""]
    lines += _table(
        ("texts", "tokens", "top-1 agreement", "mean KL (nats)", "perplexity", "source perplexity"),
        [
            (
                fidelity["texts"],
                fidelity["tokens"],
                fidelity["top1_agreement"],
                fidelity["mean_kl"],
                fidelity["perplexity"],
                fidelity["source_perplexity"],
            )
        ],
    )
    domain = quality["answers"]["domain"]
    if domain:
        passed = sum(not item["problems"] for item in domain)
        lines += [f"## Domain answers: {passed} of {len(domain)} pass", ""]
        lines += _table(
            ("id", "prompt", "answer", "finish", "problems"),
            [(i["id"], i["prompt"], i["answer"][:200], i["finish"], "; ".join(i["problems"]) or "ok") for i in domain],
        )
    lines += [f"Answers ending with a stop token: {quality['answers']['stop_rate']:.0%}.", ""]
    soak = quality["soak"]
    if soak:
        lines += [
            f"## Soak: {len(soak['rss_mb'])} requests",
            "",
            f"Resident memory {soak['rss_mb'][0]:.1f} MB after the first request, {soak['rss_mb'][-1]:.1f} MB "
            f"after the last; fitted growth {soak['growth_mb']:.2f} MB ({soak['slope_mb_per_request'] * 1000:.2f} MB "
            "per 1000 requests).",
            "",
        ]
    lines += ["## Edge cases", ""]
    lines += _table(
        ("case", "outcome", "detail", "verdict"),
        [
            (c["case"], c["outcome"], c.get("message") or c.get("answer", "")[:80], c["problem"] or "ok")
            for c in quality["edge_cases"]
        ],
    )
    return lines


def _plots(item: dict[str, Any], everyone: list[dict[str, Any]], folder: Path) -> list[Path]:
    if not any(other["benchmark"] or other["quality"] for other in everyone):
        return []  # nothing measured here to plot (another plugin's evaluators)
    try:
        import matplotlib
    except ImportError:
        return []  # report.md says plots need the [evaluate] extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(exist_ok=True)
    written = []
    speed = [other for other in everyone if other["benchmark"]]
    if speed:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        source = next((other["benchmark"]["source"] for other in speed if other["benchmark"]["source"]), None)
        series = [(other["report"]["variant"], other["benchmark"]["package"]) for other in speed]
        series += [("source (PyTorch fp32)", source)] if source else []
        for label, measured in series:
            lengths = [row["prompt_tokens"] for row in measured["lengths"]]
            style = "--" if label.startswith("source") else "-"
            axes[0].plot(lengths, [row["ttft_ms"] for row in measured["lengths"]], style, marker="o", label=label)
            axes[1].plot(
                lengths, [row["decode_tokens_per_s"] for row in measured["lengths"]], style, marker="o", label=label
            )
        for ax, ylabel, title in (
            (axes[0], "time to first token (ms)", "Latency"),
            (axes[1], "decode speed (tokens/s)", "Decode speed"),
        ):
            ax.set_xscale("log", base=2)
            ax.set_xticks(lengths, [str(length) for length in lengths])
            ax.set_xlabel("prompt length (tokens)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(True, alpha=0.3)
            ax.legend()
        written.append(_save(figure, folder / "speed.png", plt))
    quality = [other for other in everyone if other["quality"]]
    if item["quality"] and item["quality"]["soak"]:
        figure, ax = plt.subplots(figsize=(7, 4))
        for other in quality:
            if other["quality"]["soak"]:
                rss = other["quality"]["soak"]["rss_mb"]
                ax.plot(range(1, len(rss) + 1), rss, label=other["report"]["variant"])
        ax.set_xlabel("request")
        ax.set_ylabel("resident memory (MB)")
        ax.set_title("Memory over the soak")
        ax.grid(True, alpha=0.3)
        ax.legend()
        written.append(_save(figure, folder / "memory.png", plt))
    if quality:
        written.append(_fidelity_plot(quality, folder / "fidelity.png", plt))
    pareto = pareto_plot(everyone, folder / "search.png", plt, _save)
    return [*written, pareto] if pareto else written


def _fidelity_plot(quality: list[dict[str, Any]], file: Path, plt: Any) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [other["report"]["variant"] for other in quality]
    axes[0].bar(names, [other["quality"]["fidelity"]["top1_agreement"] for other in quality], color="tab:blue")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("top-1 agreement with the source (fraction)")
    axes[1].bar(names, [other["quality"]["fidelity"]["mean_kl"] for other in quality], color="tab:orange")
    axes[1].set_ylabel("mean KL divergence from the source (nats)")
    for ax in axes:
        ax.set_xlabel("variant")
        ax.grid(True, axis="y", alpha=0.3)
    figure.suptitle("Fidelity to the source model (teacher-forced)")
    return _save(figure, file, plt)


def _save(figure: Any, file: Path, plt: Any) -> Path:
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(prefix=f".{file.stem}-", suffix=".png", dir=file.parent)
    os.close(handle)
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    Path(temporary).replace(file)
    return file


def _atomic_text(file: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{file.name}-", dir=file.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    Path(temporary).replace(file)
