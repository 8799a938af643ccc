"""LoRA adapters at run time against merged packages, and against llama.cpp's `--lora`, measured interleaved in one run.

    python benchmarks/bench_adapters.py --llama-cpp-bin DIR [--rounds 3] [--threads 2] [--adapters DIR] [--keep]

1. Trains the demo's two adapters with ``examples/fine-tune/train.py`` (cached by its ``train.json``; ``--adapters``
   is passed to it as ``--out``): ``pirate`` (rank 8 on q, v) and ``json`` (rank 16 on o, gate, down). The third
   adapter, ``pirate-copy``, is a copy of ``pirate``'s folder under another name; the names of N = 8 are those three
   and five more copies (``copy-4`` .. ``copy-8``, of pirate and json in turn): the files are tiny, memory is what
   is measured.
2. Builds, in a temporary copy of ``examples/fine-tune`` with no evaluation and no registration, the project with
   ``[convert] adapters = "runtime"`` (the int4 base once, the 8 adapter files beside it) and with ``"merge"`` (an
   int4 package per adapter; pirate and json only: a copy of an adapter merges to the same weights, so the merged
   packages of N = 8 are those two folders in turn, as the adapters are). The runtime project twice: as the example
   builds it (``base``: the GGUF's Q4_1 blocks kept) and with ``[quantize] gguf_blocks = false`` (``base
   requantized``: quantized again from the float weights, with [quantize]'s default Q4_1 blocks). Every merged
   package is quantized again too (a merged adapter changes the weights), with round to nearest: Q4_1 blocks would
   round a merged adapter away on the GGUF's grid (docs/quantization.md).
3. Converts pirate and json to GGUF adapters with the vendored llama.cpp's ``convert_lora_to_gguf.py`` (f32, its own
   ``gguf-py`` first on the path), against the demo's GGUF dequantized to a float32 folder.
4. Measures, each in a fresh process, the rounds interleaved (every configuration once per round), same threads:
   - memory: peak resident memory (VmHWM) of one process holding a runtime base with N adapter files loaded
     (``og.Adapters``), and of one process holding N merged packages (as one server would hold them), N = 1, 2, 8
     (and the base with none);
     each process generates 8 tokens after a 16-token prompt with every adapter (every model) once before it is read;
   - speed: decode tokens/s of 64 tokens after a 16-token prompt and prefill tokens/s of a 1,024-token prompt, with
     each base alone (the runtime package, no adapter active), with each adapter active, and each merged package;
     llama.cpp's ``llama-server`` (same threads) on the demo's Q4_1 GGUF without and with ``--lora`` of each
     converted adapter (its own ``timings``, greedy, ``ignore_eos``, no prompt cache);
   - each configuration's greedy answer to one question, to show that the adapters are active.
5. Prints one table, the disk sizes and the issue's targets beside the measured ratios (met or not; it never
   gates); writes ``build/adapters-bench.md`` and ``adapters-bench.json`` of the project it was run from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fine-tune"
sys.path.insert(0, str(ROOT / "benchmarks"))
TRAINED = ("pirate", "json")
COPY_OF = {  # every adapter name of N = 8, and the trained adapter its folder is a copy of
    "pirate": "pirate", "json": "json", "pirate-copy": "pirate", "copy-4": "json", "copy-5": "pirate",
    "copy-6": "json", "copy-7": "pirate", "copy-8": "json",
}  # fmt: skip
NAMES = tuple(COPY_OF)
COUNTS = (1, 2, 8)
BASE_ALONE = 0  # a runtime base with no adapter file loaded: where its memory starts
BASES = {  # each runtime base measured: its [quantize] settings over the example's
    "base": {},  # the example as it is: the GGUF's blocks kept
    "base requantized": {"gguf_blocks": False},  # quantized again from the float weights (q4_1)
}
SHORT, LONG, NEW_TOKENS = 16, 1024, 64
QUESTION = "What is the capital of Peru?"
TARGET_MEMORY, TARGET_DECODE = 1.3, 0.8
STARTUP_S, REQUEST_S = 120.0, 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp-bin", type=Path, required=True, help="llama.cpp's build/bin (llama-server).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adapters", type=Path, default=EXAMPLE / "adapters", help="train.py's --out")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # a configuration as JSON, in a fresh process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure), args.threads)))
        return
    work = Path(tempfile.mkdtemp(prefix="slmdeploy-adapters-"))
    try:
        compare(args, work)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def compare(args: argparse.Namespace, work: Path) -> None:
    adapters = train_adapters(args.adapters, work)
    runtimes, merged = build_projects(adapters, work)
    source = prepare_source(work)
    lora = convert_loras(args.llama_cpp_bin, adapters, source, work)
    memory_runs = memory_configurations(runtimes, merged)
    speed_runs = speed_configurations(runtimes, merged, lora, args.llama_cpp_bin)
    prompts = prompt_sets(source)
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in {**memory_runs, **speed_runs}}
    print(f"\nmeasuring {len(found)} configurations, {args.rounds} interleaved rounds, {args.threads} threads")
    for round_index in range(args.rounds):
        for name, configuration in {**memory_runs, **speed_runs}.items():
            result = run_fresh({**configuration, "prompts": prompts}, args.threads)
            found[name].append(result)
            print(f"  round {round_index + 1}: {name}: {brief(result)}", flush=True)
    disk = disk_sizes(runtimes, merged)
    report(found, memory_runs, speed_runs, disk, args)


def train_adapters(out: Path, work: Path) -> dict[str, Path]:
    """The two trained adapters (train.py, cached), and their copies under the other names."""
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--out", str(out)], check=True)
    return {
        name: out / name if name in TRAINED else Path(shutil.copytree(out / trained, work / "adapters" / name))
        for name, trained in COPY_OF.items()
    }


def build_projects(adapters: dict[str, Path], work: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Each runtime base's int4 package (8 adapter files beside one base) and the merged int4 package of each
    trained adapter; all built with `slmdeploy build`, no evaluation, no registration."""
    runtimes = {}
    for label, quantize in BASES.items():
        project = build(work / label.replace(" ", "-"), adapters, "runtime", quantize)
        runtimes[label] = project / "build" / "int4" / "model"
    merge = build(work / "merge", {name: adapters[name] for name in TRAINED}, "merge", {})
    merged = {name: merge / "build" / f"{name}-int4" / "model" for name in TRAINED}
    return runtimes, merged


def build(project: Path, adapters: dict[str, Path], mode: str, quantize: dict[str, Any]) -> Path:
    import tomlkit

    project.mkdir(parents=True)
    document = tomlkit.parse((EXAMPLE / "slmdeploy.toml").read_text(encoding="utf-8"))
    for table in ("evaluate", "register"):
        document.pop(table, None)
    document["source"]["adapter"] = [str(folder) for folder in adapters.values()]  # type: ignore[index]
    document["convert"]["adapters"] = mode  # type: ignore[index]
    document["quantize"].update(quantize)  # type: ignore[union-attr]
    (project / "slmdeploy.toml").write_text(tomlkit.dumps(document), encoding="utf-8")
    started = time.monotonic()
    subprocess.run(["slmdeploy", "--plain", "-C", str(project), "build"], check=True)
    print(f"built {project.name} ({mode}, {len(adapters)} adapters) in {time.monotonic() - started:.0f} s")
    return project


def prepare_source(work: Path) -> Path:
    from bench_peers import prepare_source as prepare

    return prepare(work)


def convert_loras(tools: Path, adapters: dict[str, Path], source: Path, work: Path) -> dict[str, Path]:
    """pirate and json as llama.cpp LoRA GGUFs, made by the vendored tree's own converter and gguf-py."""
    vendored = next(tools.parent.parent.glob("llama_cpp_python-*/vendor/llama.cpp"))
    made = {}
    for name in TRAINED:
        out = work / f"lora-{name}.gguf"
        subprocess.run(
            [sys.executable, str(vendored / "convert_lora_to_gguf.py"), "--base", str(source), "--outtype", "f32",
             "--outfile", str(out), str(adapters[name])],
            check=True, env={**os.environ, "PYTHONPATH": str(vendored / "gguf-py")}, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"converted {name} to {out.name} ({out.stat().st_size / 1e6:.1f} MB)")
        made[name] = out
    return made


def memory_configurations(runtimes: dict[str, Path], merged: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each base with N adapter files; N merged packages (the two built ones in turn) in one process."""
    found: dict[str, dict[str, Any]] = {}
    for label, runtime in runtimes.items():
        for count in (BASE_ALONE, *COUNTS):
            files = [str(runtime / "adapters" / f"{name}.onnx_adapter") for name in NAMES[:count]]
            found[f"memory: {label} + {count}"] = {"kind": "memory", "base": str(runtime), "adapters": files}
    for count in COUNTS:
        folders = [str(merged[COPY_OF[name]]) for name in NAMES[:count]]
        found[f"memory: {count} merged"] = {"kind": "memory", "packages": folders}
    return found


def speed_configurations(
    runtimes: dict[str, Path], merged: dict[str, Path], lora: dict[str, Path], tools: Path
) -> dict[str, dict[str, Any]]:
    from bench_peers import demo_gguf

    found: dict[str, dict[str, Any]] = {}
    for label, runtime in runtimes.items():
        found[f"{label} alone"] = {"kind": "genai", "package": str(runtime)}
        for name in TRAINED:
            adapter = str(runtime / "adapters" / f"{name}.onnx_adapter")
            found[f"{label} + {name}"] = {"kind": "genai", "package": str(runtime), "adapter": adapter}
    for name in TRAINED:
        found[f"merged {name}"] = {"kind": "genai", "package": str(merged[name])}
    server = str(tools / "llama-server")
    found["llama.cpp Q4_1"] = {"kind": "llama", "server": server, "gguf": str(demo_gguf())}
    for name in TRAINED:
        found[f"llama.cpp Q4_1 --lora {name}"] = {**found["llama.cpp Q4_1"], "lora": str(lora[name])}
    return found


def prompt_sets(source: Path) -> dict[str, list[int]]:
    """The token ids every configuration is given: a 16- and a 1,024-token prompt of held-out text, and the
    question in the model's chat template."""
    from bench_peers import prompt_ids
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    chat: Any = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    ids = chat if isinstance(chat, list) else chat["input_ids"]
    return {"short": prompt_ids(source, SHORT), "long": prompt_ids(source, LONG), "question": [int(i) for i in ids]}


def run_fresh(configuration: dict[str, Any], threads: int) -> dict[str, Any]:
    """This script in a fresh process on one configuration; its JSON answer."""
    output = subprocess.run(
        [sys.executable, __file__, "--llama-cpp-bin", ".", "--threads", str(threads), "--measure",
         json.dumps(configuration)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return dict(json.loads(output.strip().splitlines()[-1]))


def measure(configuration: dict[str, Any], threads: int) -> dict[str, Any]:
    if configuration["kind"] == "memory":
        return measure_memory(configuration, threads)
    if configuration["kind"] == "llama":
        return measure_llama(configuration, threads)
    return measure_genai(configuration, threads)


def measure_memory(configuration: dict[str, Any], threads: int) -> dict[str, Any]:
    """Load everything, generate 8 tokens with each adapter (each model) once, read the peak resident memory."""
    import onnxruntime_genai as og

    from slmdeploy.plugin.genai import load_genai_model

    ids = configuration["prompts"]["short"]
    if "base" in configuration:
        model = load_genai_model(Path(configuration["base"]), threads)
        adapters = og.Adapters(model)
        for index, file in enumerate(configuration["adapters"]):
            adapters.load(file, str(index))
        for index in range(len(configuration["adapters"])):
            greedy(og, model, ids, 8, adapters, str(index))
        if not configuration["adapters"]:
            greedy(og, model, ids, 8)
    else:
        models = [load_genai_model(Path(folder), threads) for folder in configuration["packages"]]
        for model in models:
            greedy(og, model, ids, 8)
    return {"peak_rss_mb": peak_rss_mb()}


def greedy(og: Any, model: Any, ids: list[int], new_tokens: int, adapters: Any = None, name: str = "") -> list[int]:
    import numpy as np

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(ids) + new_tokens)
    generator = og.Generator(model, params)
    if adapters is not None:
        generator.set_active_adapter(adapters, name)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    tokens: list[int] = []
    while not generator.is_done() and len(tokens) < new_tokens:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


def measure_genai(configuration: dict[str, Any], threads: int) -> dict[str, Any]:
    """The package (with its adapter active, if any): decode after the short prompt, prefill of the long one."""
    from slmdeploy.plugin.genai import GenaiPackage

    adapter = configuration.get("adapter")
    package = GenaiPackage(Path(configuration["package"]), threads, adapter=Path(adapter) if adapter else None)
    prompts = configuration["prompts"]
    timed(package, prompts["short"], 8)  # warm-up
    _, decode_s = timed(package, prompts["short"], NEW_TOKENS)
    long_prefill_s, _ = timed(package, prompts["long"], 1)
    answer = list(package.generate(prompts["question"], 16))
    return {
        "decode_short": NEW_TOKENS / decode_s,
        "prefill_long": LONG / long_prefill_s,
        "peak_rss_mb": peak_rss_mb(),
        "answer": package.decode(answer),
    }


def timed(package: Any, ids: list[int], new_tokens: int) -> tuple[float, float]:
    """Seconds to feed `ids` (prefill), then to generate exactly `new_tokens` tokens (as bench_peers times them)."""
    started = time.perf_counter()
    total = len(ids) + new_tokens
    generation = package.generate(ids, new_tokens, min_new_tokens=new_tokens, stop=False, max_length=total)
    prefilled = time.perf_counter()
    for _ in generation:
        pass
    return prefilled - started, time.perf_counter() - prefilled


def measure_llama(configuration: dict[str, Any], threads: int) -> dict[str, Any]:
    """llama-server on one free loopback port, this configuration's model and LoRA; its own timings. ``--poll 0``:
    its threads sleep between tasks instead of spinning; with its default (50), on a machine where another process
    holds a core, each step waited out that process's time slices (decode 1 to 3 tokens/s instead of 25 to 30)."""
    from bench_serve import free_port, wait_until_up

    port = free_port()
    command = [configuration["server"], "-m", configuration["gguf"], "-c", "2048", "-np", "1", "-t", str(threads),
               "-tb", str(threads), "--poll", "0", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if "lora" in configuration:
        command += ["--lora", configuration["lora"]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process)
        prompts = configuration["prompts"]
        complete(url, prompts["short"], 8)  # warm-up
        short = complete(url, prompts["short"], NEW_TOKENS)
        long = complete(url, prompts["long"], 1)
        answer = complete(url, prompts["question"], 16, ignore_eos=False)
        return {
            "decode_short": short["timings"]["predicted_per_second"],
            "prefill_long": long["timings"]["prompt_per_second"],
            "peak_rss_mb": peak_rss_mb(process.pid),
            "answer": answer["content"],
        }
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def complete(url: str, ids: list[int], new_tokens: int, ignore_eos: bool = True) -> dict[str, Any]:
    """A greedy completion of the token ids `ids`, `new_tokens` long (exactly, with `ignore_eos`), no prompt cache,
    so every prompt is prefilled in full."""
    import httpx

    body = {"prompt": ids, "n_predict": new_tokens, "ignore_eos": ignore_eos, "cache_prompt": False,
            "temperature": 0.0, "top_k": 1, "samplers": ["top_k"]}  # fmt: skip
    response = httpx.post(f"{url}/completion", json=body, timeout=REQUEST_S)
    response.raise_for_status()
    return dict(response.json())


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3  # kB
    raise SystemExit("no VmHWM in /proc/<pid>/status: peak memory is measured on Linux only")


def disk_sizes(runtimes: dict[str, Path], merged: dict[str, Path]) -> dict[int, dict[str, float]]:
    """Bytes on disk (MB) for N adapters: each base once + N adapter files, against N merged packages."""
    found: dict[int, dict[str, float]] = {}
    for count in (BASE_ALONE, *COUNTS):
        found[count] = {"merged": sum(folder_size(merged[COPY_OF[name]]) for name in NAMES[:count]) / 1e6}
        for label, runtime in runtimes.items():
            base = folder_size(runtime) - folder_size(runtime / "adapters")
            files = sum((runtime / "adapters" / f"{name}.onnx_adapter").stat().st_size for name in NAMES[:count])
            found[count][label] = (base + files) / 1e6
    return found


def folder_size(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def brief(result: dict[str, Any]) -> str:
    if "decode_short" not in result:
        return f"peak {result['peak_rss_mb']:.0f} MB"
    return (
        f"decode {result['decode_short']:.1f} tok/s, prefill {result['prefill_long']:.0f} tok/s, "
        f"peak {result['peak_rss_mb']:.0f} MB, answer {result['answer'][:40]!r}"
    )


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def report(
    found: dict[str, list[dict[str, Any]]],
    memory_runs: dict[str, Any],
    speed_runs: dict[str, Any],
    disk: dict[int, dict[str, float]],
    args: argparse.Namespace,
) -> None:
    lines = [*memory_table(found, disk), "", *speed_table(found, speed_runs), "", *target_lines(found)]
    note = (
        f"Medians of {args.rounds} interleaved rounds, {args.threads} threads, each configuration in a fresh process. "
        "Memory: peak resident memory of one process holding a runtime base and N adapter files, against one "
        "process holding N merged packages (as one server would), after 8 tokens with each adapter (model). "
        f"Decode: {NEW_TOKENS} tokens after a {SHORT}-token prompt; prefill: a {LONG}-token prompt. "
        "The merged packages are requantized (RTN int4: a merged adapter changes the weights, so the GGUF's blocks "
        "are not kept); `base` keeps the GGUF's Q4_1 blocks (the example as built), `base requantized` is the same "
        "runtime project with [quantize] gguf_blocks = false. A ratio in a memory cell is to N merged packages. "
        "llama.cpp: llama-server --poll 0 on the demo's Q4_1 GGUF, its own timings, with --lora of the same adapters "
        "converted by its convert_lora_to_gguf.py (f32)."
    )
    text = "\n".join(lines)
    print(f"\n{text}\n\n{note}")
    out = Path.cwd() / "build"
    out.mkdir(exist_ok=True)
    (out / "adapters-bench.md").write_text(f"# Adapters at run time against merged packages\n\n{text}\n\n{note}\n")
    summary = {"threads": args.threads, "rounds": args.rounds, "disk": disk, "runs": found}
    (out / "adapters-bench.json").write_text(json.dumps(summary, indent=2))
    print(f"written: {out / 'adapters-bench.md'}")


def memory_table(found: dict[str, list[dict[str, Any]]], disk: dict[int, dict[str, float]]) -> list[str]:
    """Per N: disk and peak memory of each base with N adapters and of N merged packages (ratio to the latter)."""
    header = [*(f"disk MB, {label} + N" for label in BASES), "disk MB, N merged",
              *(f"peak MB, {label} + N" for label in BASES), "peak MB, N merged"]  # fmt: skip
    lines = ["| N | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for count in (BASE_ALONE, *COUNTS):
        merged = median(found[f"memory: {count} merged"], "peak_rss_mb") if count else None
        cells = [*(f"{disk[count][label]:.1f}" for label in BASES), f"{disk[count]['merged']:.1f}" if count else ""]
        for label in BASES:
            peak = median(found[f"memory: {label} + {count}"], "peak_rss_mb")
            cells.append(f"{peak:.0f}" + (f" ({peak / merged:.2f}x)" if merged else ""))
        cells.append(f"{merged:.0f}" if merged else "")
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    return lines


def speed_table(found: dict[str, list[dict[str, Any]]], speed_runs: dict[str, Any]) -> list[str]:
    """Each speed configuration; an adapter's row with its ratios to its base alone and to its merged variant."""
    lines = [f"| model | decode tok/s @{SHORT} | prefill tok/s @{LONG} | peak MB | answer to {QUESTION!r} |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name in speed_runs:
        runs = found[name]
        cells = [f"{median(runs, 'decode_short'):.1f}", f"{median(runs, 'prefill_long'):.0f}"]
        for reference, label in references(name):
            cells = [
                f"{cells[0]} ({ratio(found, name, reference, 'decode_short'):.2f}x {label})",
                f"{cells[1]} ({ratio(found, name, reference, 'prefill_long'):.2f}x {label})",
            ]
        answer = runs[-1]["answer"].replace("\n", " ").replace("|", "/")[:48]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {median(runs, 'peak_rss_mb'):.0f} | {answer} |")
    return lines


def ratio(found: dict[str, list[dict[str, Any]]], name: str, reference: str, key: str) -> float:
    return median(found[name], key) / median(found[reference], key)


def references(name: str) -> list[tuple[str, str]]:
    """The rows an adapter's row is compared with, and how a ratio cell calls them."""
    for adapter in TRAINED:
        for label in BASES:
            if name == f"{label} + {adapter}":
                return [(f"{label} alone", "alone"), (f"merged {adapter}", "merged")]
        if name == f"llama.cpp Q4_1 --lora {adapter}":
            return [("llama.cpp Q4_1", "alone")]
    return []


def target_lines(found: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The issue's targets for each base, met or not, and the two parts of each ratio: the base's own form against
    a merged package (requantized), and the adapter's cost on that base."""
    lines = []
    for label in BASES:
        memory = ratio(found, f"memory: {label} + {COUNTS[-1]}", "memory: 1 merged", "peak_rss_mb")
        lines.append(f"target ({label}): memory with {COUNTS[-1]} adapters / one merged package: {memory:.2f}x "
                     f"(at most {TARGET_MEMORY}x): {'met' if memory <= TARGET_MEMORY else 'not met'}")  # fmt: skip
        for adapter in TRAINED:
            decode = ratio(found, f"{label} + {adapter}", f"merged {adapter}", "decode_short")
            lines.append(f"target ({label}): decode with {adapter} active / merged {adapter}: {decode:.2f}x "
                         f"(at least {TARGET_DECODE}x): {'met' if decode >= TARGET_DECODE else 'not met'}")  # fmt: skip
    for label in BASES:
        memory = ratio(found, f"memory: {label} + {BASE_ALONE}", "memory: 1 merged", "peak_rss_mb")
        decode = ratio(found, f"{label} alone", "merged pirate", "decode_short")
        adapters = ", ".join(
            f"{adapter} {ratio(found, f'{label} + {adapter}', f'{label} alone', 'decode_short'):.2f}x"
            for adapter in TRAINED
        )
        lines.append(f"parts ({label}): {label} alone / one merged package: memory {memory:.2f}x, decode "
                     f"{decode:.2f}x (merged pirate); decode with an adapter / {label} alone: {adapters}")  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
