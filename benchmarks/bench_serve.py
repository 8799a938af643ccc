"""`slmdeploy serve` against llama.cpp's C++ `llama-server -np 8 -cb` on the same model, in one run, loopback only.

    python benchmarks/bench_serve.py --llama-cpp-bin DIR [--project DIR] [--threads 2] [--max-tokens 128] [--rounds 2]

1. Starts `slmdeploy serve --max-batch 8` on the demo project's deployed variant (the first that passed its gates)
   and `llama-server -np 8 -cb` (8 slots of 2,048 tokens, continuous batching) on Q4_K_M made from the demo's GGUF
   with `llama-quantize`, each on a free 127.0.0.1 port with the same threads. `nox -s bench-serve` builds both
   llama.cpp tools from the llama-cpp-python sdist's vendored llama.cpp and passes their folder.
2. Drives each with a bounded async load: 1, 4, 8 and 16 clients, each sending `rounds` streamed chat completions
   one after another; client i starts i x 150 ms after the first (staggered arrivals). Prompts of about 16 to 1,024
   tokens, sampled (temperature 0.8, top-p 0.95) with a seed per request, exactly `max_tokens` tokens per answer
   (ours: `min_tokens`; llama-server: `ignore_eos`). Each level runs on one server and then on the other.
3. Prints per server and level: requests, failed, aggregate tokens/s, time to first token p50/p95, inter-token
   latency p50/p95; each server's peak resident memory; then the issue's targets as ratios. It never gates.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
CLIENTS = (1, 4, 8, 16)
STAGGER_S = 0.15
REQUEST_DEADLINE_S = 300.0
STARTUP_S = 180.0
PARAGRAPH = (
    "The harbour town wakes early: boats go out, the market opens, and the bakers sell bread to the "
    "fishermen before the sun is up. "
)  # fmt: skip  (about 32 tokens)
PROMPT_REPEATS = (0, 1, 4, 16, 31, 2, 8)  # about 16, 48, 140, 530, 1,010, 80, 270 tokens with the question
QUESTION = "Write a long story about this place."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp-bin", type=Path, required=True, help="Folder with llama-server, llama-quantize.")
    parser.add_argument("--project", type=Path, default=ROOT, help="The demo project, built (`nox -s demo`).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="Requests per client at each level.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work:
        servers = {
            "slmdeploy serve": ours(args.project, args.threads),
            "llama-server -np 8 -cb": llama_server(args.llama_cpp_bin, Path(work), args.threads),
        }
        results, memory = run_interleaved(servers, args)
    report(results, memory, args)


def ours(project: Path, threads: int) -> tuple[list[str], str, dict[str, Any]]:
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.serve.models import project_specs

    spec = project_specs(project / BUILD_DIR, [])[0]
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "serve", "--model", spec.name,
               "--threads", str(threads), "--max-batch", "8", "--max-queue", "64"]  # fmt: skip
    return command, spec.name, {"min_tokens": None}


def llama_server(tools: Path, work: Path, threads: int) -> tuple[list[str], str, dict[str, Any]]:
    from bench_peers import demo_gguf

    quantized = work / "Q4_K_M.gguf"
    subprocess.run([str(tools / "llama-quantize"), "--allow-requantize", str(demo_gguf()), str(quantized), "Q4_K_M"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    command = [str(tools / "llama-server"), "-m", str(quantized), "-np", "8", "-cb", "-c", "16384",
               "-t", str(threads), "-tb", str(threads), "--alias", "q4_k_m"]  # fmt: skip
    return command, "q4_k_m", {"ignore_eos": True}


def run_interleaved(servers: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, float]]:
    """Both servers up (an idle one uses no CPU), each level measured on one and then the other, so a machine whose
    load drifts treats them alike; each server's peak resident memory read from the kernel at the end."""
    processes: dict[str, tuple[subprocess.Popen[bytes], str, str, dict[str, Any]]] = {}
    try:
        for name, (command, model, extra) in servers.items():
            port = free_port()
            process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            processes[name] = (process, url, model, extra)
            wait_until_up(f"{url}/v1/models", process)
            asyncio.run(load(url, model, extra, 1, 1, args.max_tokens))  # warm-up
        results: dict[str, Any] = {name: {} for name in servers}
        for level in CLIENTS:
            for name, (_, url, model, extra) in processes.items():
                print(f"{name}: {level} clients, {args.rounds * level} requests", flush=True)
                results[name][level] = asyncio.run(load(url, model, extra, level, args.rounds, args.max_tokens))
        memory = {name: peak_rss_mb(process.pid) for name, (process, *_) in processes.items()}
        return results, memory
    finally:
        for process, *_ in processes.values():
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def load(url: str, model: str, extra: dict[str, Any], clients: int, rounds: int, tokens: int) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(timeout=REQUEST_DEADLINE_S) as http:
        started = time.perf_counter()
        runs = await asyncio.gather(
            *(client(http, url, model, extra, index, rounds, tokens) for index in range(clients))
        )
        wall = time.perf_counter() - started
    done = [run for each in runs for run in each if "error" not in run]
    ttfts = sorted(run["ttft"] for run in done)
    gaps = sorted(gap for run in done for gap in run["gaps"])
    return {
        "requests": sum(len(each) for each in runs),
        "failed": sum(1 for each in runs for run in each if "error" in run),
        "aggregate_tps": sum(run["tokens"] for run in done) / wall,
        "ttft_p50_ms": percentile(ttfts, 50) * 1000,
        "ttft_p95_ms": percentile(ttfts, 95) * 1000,
        "itl_p50_ms": percentile(gaps, 50) * 1000,
        "itl_p95_ms": percentile(gaps, 95) * 1000,
        "errors": sorted({run["error"][:200] for each in runs for run in each if "error" in run}),
    }


async def client(http: Any, url: str, model: str, extra: dict[str, Any], index: int, rounds: int,
                 tokens: int) -> list[dict[str, Any]]:  # fmt: skip
    await asyncio.sleep(index * STAGGER_S)  # staggered arrivals, as the load asks
    runs = []
    for turn in range(rounds):
        number = index * rounds + turn
        prompt = PARAGRAPH * PROMPT_REPEATS[number % len(PROMPT_REPEATS)] + QUESTION
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
                "temperature": 0.8, "top_p": 0.95, "seed": 1000 + number, "stream": True}  # fmt: skip
        body |= {key: tokens if value is None else value for key, value in extra.items()}
        try:
            runs.append(await asyncio.wait_for(one(http, f"{url}/v1/chat/completions", body), REQUEST_DEADLINE_S))
        except Exception as error:  # noqa: BLE001 - a failed request is counted, not fatal
            status = getattr(getattr(error, "response", None), "status_code", None)
            runs.append({"error": f"HTTP {status}: {error!r}" if status else repr(error)})
    return runs


async def one(http: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    stamps: list[float] = []
    async with http.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
            if not data or data == "[DONE]":
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if any(choice.get("delta", {}).get("content") for choice in chunk.get("choices", [])):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError("no token came back")
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    return {"ttft": stamps[0] - started, "tokens": len(stamps), "gaps": gaps}


def report(results: dict[str, dict[int, dict[str, Any]]], memory: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\nbench-serve: {args.threads} threads each, seeded sampling, {args.max_tokens} tokens per answer, "
          f"{args.rounds} requests per client, clients {STAGGER_S * 1000:.0f} ms apart; tokens: streamed content "
          "chunks (one per token)")  # fmt: skip
    print_table(results)
    for name, megabytes in memory.items():
        print(f"peak resident memory, {name}: {megabytes:.0f} MB")
    name = "llama-server -np 8 -cb"
    ours, peer = results["slmdeploy serve"], results[name]
    failed = {name: sum(row["failed"] for row in levels.values()) for name, levels in results.items()}
    print(f"\nours at 8 / ours at 1, aggregate tok/s: {ratio(ours[8], ours[1], 'aggregate_tps'):.2f}x (target 3x)")
    print(f"ours at 8 / llama-server at 8: {ratio(ours[8], peer[8], 'aggregate_tps'):.2f}x (target 1.5x)")
    print(f"ours TTFT p50 at 8 / at 1: {ratio(ours[8], ours[1], 'ttft_p50_ms'):.2f}x (target at most 3x)")
    print(f"failed requests, ours: {failed['slmdeploy serve']} (target 0); llama-server's: {failed[name]}")
    out = ROOT / "build" / "bench-serve.json"
    if os.access(ROOT, os.W_OK):
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"results": results, "peak_rss_mb": memory}, indent=2))


def print_table(results: dict[str, dict[int, dict[str, Any]]]) -> None:
    """Each server's row at each client count (Markdown), and the errors of its failed requests."""
    print("| server | clients | requests | failed | aggregate tok/s | TTFT p50/p95 ms | ITL p50/p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, levels in results.items():
        for level, row in levels.items():
            cells = [name, level, row["requests"], row["failed"], f"{row['aggregate_tps']:.1f}",
                     f"{row['ttft_p50_ms']:.0f} / {row['ttft_p95_ms']:.0f}",
                     f"{row['itl_p50_ms']:.1f} / {row['itl_p95_ms']:.1f}"]  # fmt: skip
            print("| " + " | ".join(map(str, cells)) + " |")
            for error in row["errors"]:
                print(f"  {name} at {level}: failed with {error}")


def ratio(ours: dict[str, Any], other: dict[str, Any], key: str) -> float:
    return float(ours[key] / other[key]) if other[key] else float("nan")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before answering")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer from {url} in {STARTUP_S:.0f} s")


if __name__ == "__main__":
    main()
