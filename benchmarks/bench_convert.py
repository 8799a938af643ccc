"""Convert and quantize the demo model with slmdeploy and with the plain builder commands; print the figures.

Run by ``nox -s bench-convert``. Each way runs `--repeats` times from nothing (medians are printed, with the
ratio of the two totals); then each variant's decode speed and its top-1 agreement with the float32
PyTorch model, teacher-forced over a fixed English paragraph.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomlkit

ROOT = Path(__file__).resolve().parents[1]
PARAGRAPH = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined movable "
    "metal type, oil-based ink and a wooden press adapted from those used for wine. Books became cheaper and more "
    "common, and ideas spread faster across Europe than ever before. Scholars could compare identical copies of a "
    "text, merchants printed price lists, and governments issued laws to every town."
)
PROMPT = "Write a story about a robot who paints."


def timed(command: list[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def size_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def bench_project(work: Path) -> Path:
    """The demo project's source, convert and quantize tables: the stages this benchmark is about."""
    demo = tomlkit.parse((ROOT / "slmdeploy.toml").read_text(encoding="utf-8"))
    project = work / "project"
    project.mkdir()
    kept = {name: demo[name] for name in ("project", "source", "convert", "quantize")}
    (project / "slmdeploy.toml").write_text(tomlkit.dumps(kept), encoding="utf-8")
    return project


def run_slmdeploy(project: Path) -> dict[str, object]:
    shutil.rmtree(project / ".slmdeploy", ignore_errors=True)
    shutil.rmtree(project / "build", ignore_errors=True)
    total = timed([sys.executable, "-m", "slmdeploy", "-C", str(project), "--plain", "build"])
    stages: dict[str, float] = {}
    for manifest in sorted((project / "build").glob("*/manifest.json")):
        for stage in json.loads(manifest.read_text())["stages"]:
            if not stage["cached"]:
                name = f"{stage['table']} ({manifest.parent.name})" if stage["stage"] != "convert" else "convert"
                stages[name] = stage["duration_s"]
    return {"total": total, "stages": stages}


def run_plain(work: Path, source: str, precisions: list[str]) -> dict[str, object]:
    hf = work / "plain-hf"
    shutil.rmtree(hf, ignore_errors=True)
    script = (
        "import sys; from pathlib import Path; from slmdeploy.model.sources import dequantize_gguf; "
        "dequantize_gguf(Path(sys.argv[1]), Path(sys.argv[2]), False)"
    )
    stages = {"dequantize GGUF to a Hugging Face folder": timed([sys.executable, "-c", script, source, str(hf)])}
    for precision in precisions:
        out = work / f"plain-{precision}"
        shutil.rmtree(out, ignore_errors=True)
        stages[f"builder -p {precision}"] = timed(
            [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                str(hf),
                "-o",
                str(out),
                "-p",
                precision,
                "-e",
                "cpu",
                "-c",
                str(work / "builder-cache"),
            ]
        )
    return {"total": sum(stages.values()), "stages": stages}


def medians(runs: list[dict[str, object]]) -> dict[str, float]:
    names = runs[0]["stages"]  # type: ignore[index]
    result = {name: statistics.median(run["stages"][name] for run in runs) for name in names}  # type: ignore[index]
    result["total"] = statistics.median(float(run["total"]) for run in runs)  # type: ignore[arg-type]
    return result


def quality(model: Path, hf: Path, ids: list[int], reference: object) -> dict[str, float]:
    import onnxruntime_genai as og

    from slmdeploy.testing.fidelity import compare, decode_speed, genai_logits

    tokenizer = og.Tokenizer(og.Model(str(model)))
    prompt = tokenizer.apply_chat_template(
        json.dumps([{"role": "user", "content": PROMPT}]), add_generation_prompt=True
    )
    figures = decode_speed(model, prompt)
    figures |= compare(reference, genai_logits(model, ids), ids)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as temporary:
        work = Path(temporary)
        project = bench_project(work)
        from slmdeploy.cli import main as _  # noqa: F401 - fail early if slmdeploy is missing
        from slmdeploy.config.project import load_project, resolve_source_path

        loaded = load_project(project / "slmdeploy.toml")
        source = str(resolve_source_path(loaded))
        precisions = list(loaded.stages["quantize"]["precision"])
        ours, plain = [], []
        for repeat in range(args.repeats):
            ours.append(run_slmdeploy(project))
            plain.append(run_plain(work, source, precisions))
            print(
                f"run {repeat + 1}: slmdeploy {ours[-1]['total']:.1f} s, plain {plain[-1]['total']:.1f} s", flush=True
            )
        report(project, work, precisions, medians(ours), medians(plain), ours, plain)


def report(
    project: Path,
    work: Path,
    precisions: list[str],
    ours: dict[str, float],
    plain: dict[str, float],
    ours_runs: list[dict[str, object]],
    plain_runs: list[dict[str, object]],
) -> None:
    from transformers import AutoTokenizer

    from slmdeploy.testing.fidelity import torch_logits

    print(f"\nBuild seconds (median of {len(ours_runs)} runs from nothing)")
    for name, seconds in ours.items():
        print(f"  slmdeploy  {name:<44} {seconds:7.1f}")
    for name, seconds in plain.items():
        print(f"  plain      {name:<44} {seconds:7.1f}")
    ratios = [float(a["total"]) / float(b["total"]) for a, b in zip(ours_runs, plain_runs, strict=True)]
    print(
        f"  slmdeploy / plain total: median {statistics.median(ratios):.3f} "
        f"(per run: {', '.join(f'{ratio:.3f}' for ratio in ratios)})"
    )
    hf = work / "plain-hf"
    ids = AutoTokenizer.from_pretrained(hf)(PARAGRAPH)["input_ids"]
    reference = torch_logits(hf, ids)
    print(f"\nVariants (decode: greedy, 128 new tokens, median of 3 after a warm-up; fidelity: {len(ids)} tokens)")
    print(
        f"  {'variant':<18} {'size MB':>8} {'decode tok/s':>13} {'TTFT ms':>8} {'top-1':>7} {'PPL':>7} {'PPL src':>8}"
    )
    for precision in precisions:
        for label, folder in (
            (f"slmdeploy {precision}", project / "build" / precision / "model"),
            (f"plain {precision}", work / f"plain-{precision}"),
        ):
            figures = quality(folder, hf, ids, reference)
            print(
                f"  {label:<18} {size_mb(folder):8.1f} {figures['decode_tokens_per_s']:13.1f} "
                f"{figures['ttft_ms']:8.1f} {figures['top1_agreement']:7.3f} {figures['perplexity']:7.2f} "
                f"{figures['reference_perplexity']:8.2f}"
            )


if __name__ == "__main__":
    main()
