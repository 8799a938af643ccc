"""``[evaluate.benchmark]``: speed and memory of the package and of the source model in PyTorch, in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs

from slmdeploy.plugin import DeployPackage, EvaluationReport, Metric, option
from slmdeploy.plugin.worker import run_in_worker
from slmdeploy_evaluate.reference import MeasuringEvaluator, context_tokens, shared, source_folder


def _positive_lengths(instance: Any, attribute: Any, value: list[int]) -> None:
    if not value or any(length < 1 for length in value):
        raise ValueError(f"{attribute.name} must list prompt lengths of at least one token")


@attrs.define
class BenchmarkOptions:
    prompt_lengths: list[int] = option(
        [16, 128, 512, 1024], help="prompt lengths to measure, in tokens", validator=_positive_lengths
    )
    new_tokens: int = option(32, help="tokens generated per measured run")
    warmup: int = option(1, help="unmeasured runs before the measured ones, at each length")
    repeats: int = option(3, help="measured runs at each length; figures are their medians")
    max_decode_drop: float = option(
        0.5, help="flag a prompt length whose decode speed falls by more than this fraction of the shortest's"
    )
    compare_source: bool = option(True, help="measure the source model in PyTorch (float32) too")
    thread_sweep: bool = option(
        True,
        help="also measure with fewer threads (1, 2, 4 ... up to [runtime] threads): the shortest prompt's decode "
        "and the longest prompt's time to first token",
    )


class Benchmark(MeasuringEvaluator):
    PLUGIN_NAME = "benchmark"
    Options = BenchmarkOptions
    METRICS: ClassVar[dict[str, Metric]] = {
        "ttft_ms": Metric("slowest median time to first token over the prompt lengths", "ms", False, True),
        "decode_tokens_per_s": Metric("slowest median decode speed over the prompt lengths", "tokens/s", True, True),
        "prompt_tokens_per_s": Metric("median prompt processing speed at the longest prompt", "tokens/s", True, True),
        "decode_drop": Metric("largest fall of decode speed from the shortest prompt's", "fraction", False),
        "peak_rss_mb": Metric("peak resident memory of the inference process", "MB", False),
        "cpu_percent": Metric("CPU use during decode (100 = one core)", "%", False, True),
        "load_s": Metric("time to load the model", "s", False, True),
        "size_mb": Metric("size of the package on disk", "MB", False),
        "threads": Metric("intra-op threads the package ran with ([runtime] threads)", "threads"),
        "decode_speedup": Metric("decode speed over the source model's in PyTorch", "x"),
        "bytes_bound_fraction": Metric(
            "decode speed at the shortest prompt over the bytes-bound one (read bandwidth / bytes per step)",
            "fraction",
        ),
        "prefill_speedup": Metric("prompt processing speed over the source's, at the longest prompt", "x"),
        "ttft_ratio": Metric("time to first token over the source's, at the longest prompt", "x", False),
        "memory_ratio": Metric("peak memory over the source model's in PyTorch", "x", False),
        "adapter_decode_ratio": Metric(
            "a runtime adapter's variant: decode speed with the adapter applied over the base's alone, at the "
            "shortest prompt",
            "x",
            adapter_only=True,
        ),
        "adapter_prefill_ratio": Metric(
            "a runtime adapter's variant: prompt processing speed with the adapter over the base's alone, at the "
            "longest prompt",
            "x",
            adapter_only=True,
        ),
    }

    def run(self, artifact: DeployPackage, output_dir: Path) -> EvaluationReport:
        task = {key: getattr(self.options, key) for key in ("new_tokens", "warmup", "repeats")}
        task["lengths"] = self._lengths(artifact.path)
        threads = int(self.context.tables["runtime"]["threads"])
        package_task = {**task, "runtime": "genai", "folder": str(artifact.path), "threads": threads}
        adapter = self.context.adapter_file(artifact.path)
        if adapter is None:
            package = self._measure({**package_task, "label": "package"})
            base = None
            sweep = self._sweep(package_task, package) if self.options.thread_sweep else []
        else:  # an adapter's variant: with the adapter, then the base alone at the ends, for the adapter's cost
            package = self._measure({**package_task, "adapter": str(adapter), "label": "package"})
            ends = sorted({task["lengths"][0], task["lengths"][-1]})
            base = self._measure({**package_task, "lengths": ends, "label": "base"})
            sweep = []
        source = self._source(task) if self.options.compare_source else None
        result = {
            "package": package,
            "base": base,
            "source": source,
            "size_mb": _size_mb(artifact.path),
            "threads": threads,
            "sweep": sweep,
            "options": task,
            "bound": bytes_bound(artifact.path, threads, package["lengths"], task["new_tokens"]),
        }
        (output_dir / "benchmark.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        return EvaluationReport(output_dir, summary=self._summary(result))

    def _lengths(self, folder: Path) -> list[int]:
        context = context_tokens(folder)
        kept = [length for length in self.options.prompt_lengths if length + self.options.new_tokens <= context]
        for length in sorted(set(self.options.prompt_lengths) - set(kept)):
            self.context.log(f"skipping the {length}-token prompt: longer than the context ({context} tokens)")
        return kept

    def _sweep(self, task: dict[str, Any], measured: dict[str, Any]) -> list[dict[str, Any]]:
        """The shortest prompt's decode and the longest's time to first token at 1, 2, 4 ... threads."""
        ends = sorted({task["lengths"][0], task["lengths"][-1]})
        found = {task["threads"]: measured}
        for count in sweep_counts(task["threads"]):
            if count not in found:
                found[count] = self._measure({**task, "lengths": ends, "threads": count, "label": f"{count}-threads"})
        return [sweep_row(count, found[count]) for count in sorted(found)]

    def _measure(self, task: dict[str, Any]) -> dict[str, Any]:
        return run_in_worker("slmdeploy_evaluate.measure:speed_in_worker", task, self.context, f"bench-{task['label']}")

    def _source(self, task: dict[str, Any]) -> dict[str, Any]:
        folder = source_folder(self.context)
        key = {**task, "runtimes": self.cache_version()}

        def make(out: Path) -> None:
            measured = self._measure({**task, "runtime": "torch", "folder": str(folder), "label": "source"})
            (out / "speed.json").write_text(json.dumps(measured), encoding="utf-8")

        found = shared(self.context, "source-speed", key, make)
        return dict(json.loads((found / "speed.json").read_text(encoding="utf-8")))

    def _summary(self, result: dict[str, Any]) -> dict[str, Any]:
        package, source = result["package"], result["source"]
        rows = package["lengths"]
        decode = [row["decode_tokens_per_s"] for row in rows]
        drops = [1 - speed / decode[0] for speed in decode]
        flagged = [
            row["prompt_tokens"] for row, drop in zip(rows, drops, strict=True) if drop > self.options.max_decode_drop
        ]
        metrics = {
            "threads": result["threads"],
            "ttft_ms": max(row["ttft_ms"] for row in rows),
            "decode_tokens_per_s": min(decode),
            "prompt_tokens_per_s": rows[-1]["prompt_tokens_per_s"],
            "decode_drop": max(drops),
            "peak_rss_mb": package["peak_rss_mb"],
            "cpu_percent": max(row["cpu_percent"] for row in rows),
            "load_s": package["load_s"],
            "size_mb": result["size_mb"],
            "bytes_bound_fraction": result["bound"]["lengths"][0]["fraction"],
        }
        if result["base"] is not None:
            base = {row["prompt_tokens"]: row for row in result["base"]["lengths"]}
            shortest, longest = base[rows[0]["prompt_tokens"]], base[rows[-1]["prompt_tokens"]]
            metrics["adapter_decode_ratio"] = rows[0]["decode_tokens_per_s"] / shortest["decode_tokens_per_s"]
            metrics["adapter_prefill_ratio"] = rows[-1]["prompt_tokens_per_s"] / longest["prompt_tokens_per_s"]
        if source is not None:
            metrics["decode_speedup"] = min(decode) / min(row["decode_tokens_per_s"] for row in source["lengths"])
            metrics["memory_ratio"] = package["peak_rss_mb"] / source["peak_rss_mb"]
            longest = source["lengths"][-1]
            metrics["prefill_speedup"] = rows[-1]["prompt_tokens_per_s"] / longest["prompt_tokens_per_s"]
            metrics["ttft_ratio"] = rows[-1]["ttft_ms"] / longest["ttft_ms"]
        return {"metrics": metrics, "flagged_lengths": flagged, "file": "benchmark.json"}


def bytes_bound(folder: Path, threads: int, rows: list[dict[str, Any]], new_tokens: int) -> dict[str, Any]:
    """This machine's read bandwidth at `threads`, the bytes one decode step of the package reads, and each
    prompt length's decode speed over the bytes-bound speed at the decode run's mean position."""
    from slmdeploy_evaluate.bound import package_step_bytes, read_bandwidth

    bandwidth = read_bandwidth(threads)
    step = package_step_bytes(folder)
    lengths = []
    for row in rows:
        position = row["prompt_tokens"] + new_tokens / 2
        bound = step.bound(bandwidth, position)
        fraction = row["decode_tokens_per_s"] / bound
        step_mb = step.at(position) / 1e6
        lengths.append({"prompt_tokens": row["prompt_tokens"], "step_mb": step_mb, "fraction": fraction})
    return {
        "bandwidth_gb_s": bandwidth,
        "weights_mb": step.weights / 1e6,
        "kv_bytes_per_position": step.kv_per_position,
        "weights_by_reader_mb": {kind: size / 1e6 for kind, size in sorted(step.parts.items())},
        "lengths": lengths,
    }


def sweep_counts(threads: int) -> list[int]:
    """1, 2, 4 ... below `threads`, then `threads` itself."""
    counts = [1 << power for power in range(threads.bit_length()) if 1 << power < threads]
    return [*counts, threads]


def sweep_row(threads: int, measured: dict[str, Any]) -> dict[str, Any]:
    rows = measured["lengths"]
    return {
        "threads": threads,
        "decode_tokens_per_s": rows[0]["decode_tokens_per_s"],
        "decode_prompt_tokens": rows[0]["prompt_tokens"],
        "ttft_ms": rows[-1]["ttft_ms"],
        "ttft_prompt_tokens": rows[-1]["prompt_tokens"],
    }


def _size_mb(folder: Path) -> float:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file()) / 1e6
