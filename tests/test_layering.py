"""The package's module graph: no import cycle, no imports hidden in functions to dodge one, and the
layering that docs/architecture.md describes is the one the imports follow."""

import ast
import graphlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "slicelib"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in ("__init__", "__main__"))


def _slicelib_targets(node: ast.AST) -> list[str]:
    """The slicelib modules an import statement names (``from slicelib import x`` names x when x
    is a module, else the package itself)."""
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("slicelib.")]
    if isinstance(node, ast.ImportFrom) and node.module:
        if node.module == "slicelib":
            return [a.name for a in node.names if a.name in MODULES] or ["__init__"]
        if node.module.startswith("slicelib."):
            return [node.module.split(".")[1]]
    return []


def module_imports(name: str) -> tuple[set[str], list[str]]:
    """(slicelib modules imported at module level, 'line: module' of imports inside functions)."""
    tree = ast.parse((PKG / f"{name}.py").read_text())
    top = {t for node in tree.body for t in _slicelib_targets(node)}
    for node in tree.body:  # `if TYPE_CHECKING:` and try/except blocks at module level count too
        if isinstance(node, (ast.If, ast.Try)):
            top |= {t for sub in ast.walk(node) for t in _slicelib_targets(sub)}
    local = [
        f"{sub.lineno}: {t}"
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for sub in ast.walk(fn)
        for t in _slicelib_targets(sub)
    ]
    return top - {name}, local


def graph() -> dict[str, set[str]]:
    return {m: module_imports(m)[0] for m in MODULES}


def test_no_import_cycle():
    g = graph()
    assert "__init__" not in set().union(*g.values()), (
        "a module imports the package itself (`from slicelib import ...` of a non-module name): "
        "import from the defining module instead"
    )
    try:
        tuple(graphlib.TopologicalSorter(g).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(
            f"import cycle among slicelib modules: {' -> '.join(e.args[1])}"
        ) from e


def test_no_slicelib_import_inside_functions():
    hidden = {m: module_imports(m)[1] for m in MODULES}
    hidden = {m: v for m, v in hidden.items() if v}
    assert not hidden, f"slicelib imports inside functions (move them to the top): {hidden}"


def documented_layers() -> list[str]:
    """Module names in the order docs/architecture.md's layering table lists them, bottom first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layers:start -->")[1].split("<!-- layers:end -->")[0]
    return re.findall(r"^\|\s*`(\w+)`", block, re.M)


def test_docs_layering_is_true_of_the_imports():
    layers = documented_layers()
    assert sorted(layers) == MODULES, (
        f"docs/architecture.md lists {sorted(set(layers) - set(MODULES))} that do not exist and "
        f"misses {sorted(set(MODULES) - set(layers))}"
    )
    rank = {m: i for i, m in enumerate(layers)}
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps if rank[d] >= rank[m]]
    assert not upward, f"imports that go up the documented layering: {upward}"


def test_no_module_is_over_about_600_lines():
    sizes = {m: len((PKG / f"{m}.py").read_text().splitlines()) for m in MODULES}
    assert max(sizes.values()) <= 620, {m: n for m, n in sizes.items() if n > 620}
