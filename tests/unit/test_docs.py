"""The plugin author's reference is complete: every hook, every public name and every attribute of the stage classes
has its place in docs/plugins/, and the contract stays small (as datasette's tests/test_docs.py keeps its hooks)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import slmdeploy.plugin
from slmdeploy import hookspecs
from slmdeploy.plugin import Evaluator, Registrar, Stage, StageContext
from slmdeploy.plugin.templates import ChatTemplateFamily

DOCS = Path(__file__).parents[2] / "docs"
HELPER_MODULES = ("genai", "fidelity", "worker", "templates", "files", "report")
CONTRACT_SIZE = 32
"""slmdeploy 0.1 exported 53 names here; 31 are the contract, and 0.2 added `ProjectOptions` (a type a hook receives).
Adding one is a decision: change this with its docs."""
NEW_IN_0_2 = ("ProjectOptions",)
"""Contract names slmdeploy 0.1 did not export."""
ENGINE = ("slmdeploy.execute", "slmdeploy.plan", "slmdeploy.deploy", "slmdeploy.serve", "slmdeploy.cli")


def in_engine(module: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in ENGINE)


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def anchors(text: str) -> dict[str, str]:
    """Each heading's anchor as MkDocs makes it (an explicit ``{ #id }`` or the slug of its text), by its text."""
    found = {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        explicit = re.search(r"\{ *#([\w-]+) *\}$", heading)
        title = re.sub(r"\{[^}]*\}$", "", heading).strip()
        slug = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title.replace("`", "")).strip().lower())
        found[title] = explicit.group(1) if explicit else slug
    return found


def hookspec_names() -> list[str]:
    return [name for name, value in vars(hookspecs).items() if name.startswith("slmdeploy_") and callable(value)]


def documented_anchor(name: str) -> str:
    """Where the contract documents `name`: ``plugins/api.md#<anchor>``."""
    return f"plugins/api.md#{anchors(page('plugins/api.md'))[f'`{name}`']}"


def test_the_contract_counts_its_names_and_each_has_its_anchor():
    names = slmdeploy.plugin.__all__
    assert len(names) == CONTRACT_SIZE, sorted(names)
    listing = {name: documented_anchor(name) for name in names if f"`{name}`" in anchors(page("plugins/api.md"))}
    assert set(listing) == set(names), sorted(set(names) - set(listing))
    assert listing["Quantizer"] == "plugins/api.md#quantizer"
    assert listing["hookimpl"] == "plugins/api.md#hookimpl"


@pytest.mark.parametrize("module", HELPER_MODULES)
def test_every_helper_is_documented_under_its_module(module):
    text = page("plugins/helpers.md")
    section = text.split(f"## slmdeploy.plugin.{module} ", 1)[1].split("\n## ", 1)[0]
    exported = __import__(f"slmdeploy.plugin.{module}", fromlist=["__all__"]).__all__
    missing = [name for name in exported if f"### `{name}`" not in section]
    assert not missing, f"slmdeploy.plugin.{module}: {missing}"


@pytest.mark.parametrize("hook", hookspec_names())
def test_every_hook_has_its_section(hook):
    """A heading, the signature as the hookspec has it, collecting or firstresult as declared, an example, and the
    shipped plugin that implements it."""
    text = page("plugins/hooks.md")
    assert f"\n## {hook}\n" in text, hook
    section = text.split(f"\n## {hook}\n", 1)[1].split("\n## ", 1)[0]
    parameters = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    signature = re.search(rf"def {hook}\((.*?)\) -> ", section, flags=re.S)
    assert signature and re.findall(r"(\w+): ", signature.group(1)) == parameters, hook
    firstresult = getattr(hookspecs, hook).slmdeploy_spec["firstresult"]
    assert ("@hookspec(firstresult=True)" in section) == firstresult
    assert ("firstresult." in section) == firstresult and ("Collecting." in section) != firstresult
    assert section.count("```python\n") >= 1, f"{hook} has no example"
    assert "\nImplemented by: " in section
    assert f"[`{hook}`](#{hook})" in text.split("\n## ", 1)[0], f"{hook} is missing from the table of hooks"


@pytest.mark.parametrize(
    ("cls", "doc"),
    [
        (Stage, "plugins/api.md"),
        (Evaluator, "plugins/api.md"),
        (Registrar, "plugins/api.md"),
        (ChatTemplateFamily, "plugins/templates.md"),
    ],
)
def test_every_attribute_of_the_stage_classes_is_documented(cls, doc):
    text = page(doc)
    names = [name for name in vars(cls) if not name.startswith("_")]
    if cls is Stage:
        names.append("__init__")
    assert names
    missing = [name for name in names if not re.search(rf"^\| `{re.escape(name)}[`(]", text, flags=re.M)]
    assert not missing, f"{cls.__name__}: {missing}"


def test_every_field_of_the_stage_context_is_documented():
    text = page("plugins/api.md").split("### `StageContext`", 1)[1].split("\n### ", 1)[0]
    missing = [field.name for field in StageContext.__attrs_attrs__ if f"`{field.name}`" not in text]
    assert not missing


def test_the_moved_names_import_from_their_new_home_with_a_warning():
    stability = page("plugins/stability.md")
    for name, home in slmdeploy.plugin.MOVED.items():
        module = __import__(f"slmdeploy.plugin.{home}", fromlist=[name])
        assert name in module.__all__
        with pytest.warns(
            DeprecationWarning, match=rf"slmdeploy.plugin.{name} moved to slmdeploy.plugin.{home}.{name}"
        ):
            assert getattr(slmdeploy.plugin, name) is getattr(module, name)
        row = next(line for line in stability.splitlines() if f"`{name}`" in line and line.startswith("|"))
        assert row.rstrip(" |").endswith(f"`slmdeploy.plugin.{home}`") or f"`slmdeploy.plugin.{home}` (" in row
    assert len(slmdeploy.plugin.__all__) - len(NEW_IN_0_2) + len(slmdeploy.plugin.MOVED) == 53  # 0.1's names, all kept


def test_importing_the_contract_loads_nothing_of_the_engine():
    """What `import slmdeploy.plugin` (and every helper module) loads, in a fresh interpreter: the import contract's
    promise checked as it happens (imports made by a function called at import time count too)."""
    code = "import sys, slmdeploy.plugin; print(*sorted(m for m in sys.modules if m.startswith('slmdeploy')))"
    contract = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # 19 measured (2026-12-07): the contract and the small modules it names; ProjectOptions brings four of them
    # (config.project_options, config.gates, config.search, gguf), the project file's [serve] table one
    # (config.serving)
    assert len(contract) <= 19, contract
    imports = "; ".join(f"import slmdeploy.plugin.{module}" for module in HELPER_MODULES)
    helpers = subprocess.run(
        [sys.executable, "-c", code.replace("import sys, slmdeploy.plugin;", f"import sys; {imports};")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for loaded in (contract, helpers):
        assert not [name for name in loaded if in_engine(name)], loaded
    assert not [name for name in helpers if name.startswith(("torch", "onnxruntime", "numpy", "transformers"))]


def slmdeploy_imports(file: Path) -> set[str]:
    import ast

    tree = ast.parse(file.read_text(encoding="utf-8"))
    found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    found |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in found if name == "slmdeploy" or name.startswith("slmdeploy.")}


def test_shipped_plugins_and_examples_import_only_the_contract_and_its_helpers():
    """Imports inside functions count; an example's tests may use the pytest plugin too."""
    root = DOCS.parent
    public = {"slmdeploy.plugin", *(f"slmdeploy.plugin.{module}" for module in HELPER_MODULES)}
    sources = [*root.glob("plugins/*/*.py"), *root.glob("examples/*/slmdeploy_*/*.py")]
    assert len(sources) >= 40 and any("examples" in file.parts for file in sources)  # 40 on 2026-12-07
    for file in sources:
        assert slmdeploy_imports(file) <= public, file
    for file in root.glob("examples/*/tests/*.py"):
        assert slmdeploy_imports(file) <= public | {"slmdeploy.testing", "slmdeploy.testing.models"}, file


@pytest.mark.parametrize("name", sorted(path.name for path in (DOCS / "plugins").glob("*.md")))
def test_the_examples_of_the_plugin_reference_run(name):
    """Every ``python`` block of a page runs, in order, in one namespace: its imports name what exists, its classes
    and hook implementations are defined. (``py`` blocks are signatures and fragments of a method.)"""
    namespace: dict[str, object] = {}
    for index, block in enumerate(re.findall(r"```python\n(.*?)```", page(f"plugins/{name}"), flags=re.S)):
        exec(compile(block, f"docs/plugins/{name} block {index}", "exec"), namespace)
