"""`slmdeploy serve` against llama.cpp's OpenAI server on the same model, in one run, loopback only.

    python benchmarks/bench_serve.py [--project DIR] [--threads N] [--max-tokens 128] [--rounds 2]

1. Starts `slmdeploy serve` on the demo project's deployed variant (the first that passed its gates) and
   llama-cpp-python's OpenAI server (``python -m llama_cpp.server``) on Q4_K_M made from the demo's GGUF with
   llama.cpp's quantize API (as bench_peers.py makes it), each on a free 127.0.0.1 port with the same threads.
   llama-cpp-python's server answers one request at a time; by default a new request interrupts the one running
   (its stream is cut), so it runs with ``--interrupt_requests False`` and queues them instead.
2. Drives each with a bounded async load loop (httpx, streamed chat completions, the same prompts, greedy,
   exactly ``max_tokens`` tokens per answer through ``min_tokens``, which both servers take): concurrency 1, 4 and
   8, ``rounds`` requests per client (at least 4 requests in all); every request has a deadline. The levels are
   interleaved: each is run on one server and then on the other.
3. Prints, per server: single-stream decode tokens/s and time to first token (concurrency 1), and at each
   concurrency the aggregate tokens/s, p50/p95 request latency, and failed requests; then the targets: ours at 8
   at least 1.5x ours at 1, and at least llama.cpp's at 8, with no failed request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
CONCURRENCY = (1, 4, 8)
REQUEST_DEADLINE_S = 300.0
STARTUP_S = 120.0
PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in the morning.",
    "Write a letter to a friend about learning to cook.",
    "Explain why the sky is blue, step by step.",
    "Tell the history of a small fishing village.",
    "Describe the four seasons in a mountain forest.",
    "Write instructions for planting a vegetable garden.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="The demo project, built (`nox -s demo`).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="Requests per client at each concurrency.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work:
        servers = {
            "slmdeploy serve": ours(args.project, args.threads),
            "llama.cpp server Q4_K_M": llama_cpp_server(Path(work), args.threads),
        }
        results = run_interleaved(servers, args)
    report(results, args)


def ours(project: Path, threads: int) -> tuple[list[str], str]:
    from slmdeploy.execute.publish import BUILD_DIR
    from slmdeploy.serve.models import project_specs

    spec = project_specs(project / BUILD_DIR, [])[0]
    command = [sys.executable, "-m", "slmdeploy", "-C", str(project), "serve", "--model", spec.name,
               "--threads", str(threads), "--max-batch", "8"]  # fmt: skip
    return command, spec.name


def llama_cpp_server(work: Path, threads: int) -> tuple[list[str], str]:
    import ctypes

    import llama_cpp
    from bench_peers import demo_gguf

    gguf, out = demo_gguf(), work / "Q4_K_M.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(gguf).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"llama.cpp could not quantize {gguf} to Q4_K_M")
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(out), "--model_alias", "q4_k_m",
               "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048",
               "--chat_format", "chatml", "--interrupt_requests", "False"]  # fmt: skip
    return command, "q4_k_m"


def run_interleaved(servers: dict[str, tuple[list[str], str]], args: argparse.Namespace) -> dict[str, Any]:
    """Both servers up (an idle one uses no CPU), each level measured on one and then the other, so a machine whose
    load drifts treats them alike."""
    processes: dict[str, tuple[subprocess.Popen[bytes], str, str]] = {}
    try:
        for name, (command, model) in servers.items():
            port = free_port()
            process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            processes[name] = (process, f"http://127.0.0.1:{port}", model)
            wait_until_up(f"http://127.0.0.1:{port}/v1/models", process)
            asyncio.run(load(f"http://127.0.0.1:{port}/v1/chat/completions", model, 1, 1, args.max_tokens))  # warm-up
        results: dict[str, Any] = {name: {} for name in servers}
        for level in CONCURRENCY:
            rounds = max(args.rounds, 4 // level)
            for name, (_, url, model) in processes.items():
                print(f"{name}: concurrency {level}, {rounds * level} requests", flush=True)
                results[name][level] = asyncio.run(
                    load(f"{url}/v1/chat/completions", model, level, rounds, args.max_tokens)
                )
        return results
    finally:
        for process, _, _ in processes.values():
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


async def load(url: str, model: str, clients: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    """`clients` concurrent clients, each sending `rounds` requests one after another."""
    import httpx

    async with httpx.AsyncClient(timeout=REQUEST_DEADLINE_S) as http:
        started = time.perf_counter()
        runs = await asyncio.gather(*(client(http, url, model, index, rounds, max_tokens) for index in range(clients)))
        wall = time.perf_counter() - started
    done = [run for each in runs for run in each if "error" not in run]
    latencies = sorted(run["latency"] for run in done)
    tokens = sum(run["tokens"] for run in done)
    return {
        "requests": sum(len(each) for each in runs),
        "failed": sum(1 for each in runs for run in each if "error" in run),
        "aggregate_tps": tokens / wall,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "ttft_ms": statistics.median(run["ttft"] for run in done) * 1000 if done else float("nan"),
        "decode_tps": statistics.median(run["decode_tps"] for run in done) if done else float("nan"),
        "tokens": tokens,
        "wall_s": wall,
        "errors": sorted({run["error"][:200] for each in runs for run in each if "error" in run}),
    }


async def client(http: Any, url: str, model: str, index: int, rounds: int, max_tokens: int) -> list[dict[str, Any]]:
    runs = []
    for turn in range(rounds):
        prompt = PROMPTS[(index + turn) % len(PROMPTS)]
        try:
            runs.append(await asyncio.wait_for(one(http, url, model, prompt, max_tokens), REQUEST_DEADLINE_S))
        except Exception as error:  # noqa: BLE001 - a failed request is counted, not fatal
            status = getattr(getattr(error, "response", None), "status_code", None)
            runs.append({"error": f"HTTP {status}: {error!r}" if status else repr(error)})
    return runs


async def one(http: Any, url: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "min_tokens": max_tokens, "temperature": 0, "stream": True}  # fmt: skip
    started = time.perf_counter()
    first = last = None
    pieces = 0
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
                last = time.perf_counter()
                first = first or last
                pieces += 1
    if first is None or last is None:
        raise RuntimeError("no token came back")
    decode = (pieces - 1) / (last - first) if pieces > 1 and last > first else float("nan")
    return {"latency": last - started, "ttft": first - started, "tokens": pieces, "decode_tps": decode}


def report(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"\nbench-serve: {args.threads} threads, greedy, {args.max_tokens} tokens per answer, {args.rounds} "
          "requests per client (4 at concurrency 1); tokens: streamed content chunks, one per token")  # fmt: skip
    print("| server | concurrency | requests | failed | aggregate tok/s | p50 s | p95 s | TTFT ms | decode tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, levels in results.items():
        for level, row in levels.items():
            cells = [name, level, row["requests"], row["failed"], f"{row['aggregate_tps']:.1f}", f"{row['p50_s']:.2f}",
                     f"{row['p95_s']:.2f}", f"{row['ttft_ms']:.0f}", f"{row['decode_tps']:.1f}"]  # fmt: skip
            print("| " + " | ".join(map(str, cells)) + " |")
    ours, peer = results["slmdeploy serve"], results["llama.cpp server Q4_K_M"]
    scaling = ours[8]["aggregate_tps"] / ours[1]["aggregate_tps"]
    versus = ours[8]["aggregate_tps"] / peer[8]["aggregate_tps"]
    failed = sum(row["failed"] for levels in results.values() for row in levels.values())
    for name, levels in results.items():
        for level, row in levels.items():
            for error in row["errors"]:
                print(f"{name} at {level}: failed with {error}")
    print(f"\nours at 8 / ours at 1: {scaling:.2f}x (target 1.5x: {'met' if scaling >= 1.5 else 'NOT met'})")
    print(f"ours at 8 / llama.cpp at 8: {versus:.2f}x (target 1.0x: {'met' if versus >= 1 else 'NOT met'})")
    print(f"failed requests: {failed} (target 0: {'met' if failed == 0 else 'NOT met'})")
    out = ROOT / "build" / "bench-serve.json"
    if os.access(ROOT, os.W_OK):
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2))


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
