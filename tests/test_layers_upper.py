"""The upper half of the package imports only downward (the lead's layering contract), and
has no function-local ``slicelib`` imports (which would hide a cycle)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "slicelib"

# bottom to top; a module may import only modules listed before it
LOWER = ["errors", "utils", "io", "qc", "centre", "pipeline", "data", "cache", "datasets"]
LOWER += ["derivative", "templates", "synth"]
UPPER = ["encoders", "weights", "model", "cnn3d", "build", "metrics", "config", "frozen"]
UPPER += ["engine", "train", "runs", "explain", "plotting", "compare", "course", "cli"]
CHECKED = ("build", "config", "frozen", "engine", "train", "runs", "compare", "course", "cli")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(slicelib module imported, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names = []
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("slicelib"):
                parts = child.module.split(".")
                names = [a.name for a in child.names] if len(parts) == 1 else [parts[1]]
            elif isinstance(child, ast.Import):
                names = [
                    a.name.split(".")[1] for a in child.names if a.name.startswith("slicelib.")
                ]
            found.extend((n, child.lineno, in_function) for n in names)
            visit(child, inner)

    visit(tree, False)
    return found


def test_upper_half_imports_only_downward_and_at_module_level():
    order = LOWER + UPPER
    wrong = []
    for name in CHECKED:
        for imported, line, local in _imports(PACKAGE / f"{name}.py"):
            where = f"slicelib/{name}.py:{line} imports slicelib.{imported}"
            if imported not in order:
                wrong.append(f"{where}: not in the layering")
            elif order.index(imported) >= order.index(name):
                wrong.append(f"{where}: not below it")
            elif local:
                wrong.append(f"{where} inside a function")
    assert not wrong, "\n".join(wrong)


def test_no_module_of_the_upper_half_is_over_about_600_lines():
    sizes = {n: len((PACKAGE / f"{n}.py").read_text().splitlines()) for n in CHECKED}
    assert max(sizes.values()) <= 610, sizes
