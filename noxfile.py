"""Sessions that CI and users run: ``nox -s tests``, ``nox -s demo``, ``nox -l`` for the list."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "imports", "tests"]

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: core unit tests (seconds) and integration tests on real models (minutes)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the core."""
    session.install("-e", ".", "mypy>=1.13", "pytest>=8.3")
    session.run("mypy")


@nox.session(python=PYTHON)
def imports(session: nox.Session) -> None:
    """The import contract: the core never imports a plugin; plugins import only slmdeploy.plugin."""
    session.install("-e", ".", "import-linter>=2.1")
    session.run("lint-imports")
