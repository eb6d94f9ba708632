"""Package layering: no import cycles, and library code never exits the process.

``core`` <- ``utils`` <- ``models``; ``utils`` <- ``config`` <- ``dataset_loaders``; ``dm``, ``data`` and
the entry scripts on top (see ``core/__init__.py``). Imports are read with ``ast`` (also the lazy ones
inside functions) and followed transitively, so a cycle cannot come back through a third package.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

#: package -> the project packages it may import (directly or through another package)
ALLOWED = {
    "core": set(),
    "utils": {"core"},
    "config": {"core", "utils"},
    "models": {"core", "utils"},
    "dataset_loaders": {"core", "config", "utils"},
    "dm": {"core", "config", "utils", "models", "dataset_loaders"},
    "data": {"core", "config", "utils", "dataset_loaders"},
}
#: every top-level project name (packages + entry scripts) an import can refer to
PROJECT = set(ALLOWED) | {"bench", "tests", "run_nefes", "train_dfnet", "test_refinement", "eval", "demo"}
LIBRARY = ("core", "utils", "config", "models", "dataset_loaders", "dm", "data/synthetic")


def _py_files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_packages(path: Path) -> set[str]:
    """Top-level project packages imported anywhere in ``path`` (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & PROJECT


def _direct_deps() -> dict[str, dict[str, set[str]]]:
    """package -> {imported package -> files that import it}."""
    deps = {}
    for pkg in ALLOWED:
        deps[pkg] = {}
        for f in _py_files(pkg):
            for dep in _imported_packages(f) - {pkg}:
                deps[pkg].setdefault(dep, set()).add(str(f.relative_to(REPO)))
    return deps


def test_every_package_imports_only_the_layers_below_it():
    deps = _direct_deps()
    for pkg, allowed in ALLOWED.items():
        reached, todo, via = set(), [pkg], {}
        while todo:
            cur = todo.pop()
            for dep, files in deps.get(cur, {}).items():
                if dep not in reached:
                    reached.add(dep)
                    via[dep] = f"{cur} ({sorted(files)[0]})"
                    todo.append(dep)
        bad = reached - allowed
        assert not bad, f"{pkg} reaches {sorted(bad)}: " + ", ".join(f"{b} via {via[b]}" for b in sorted(bad))


def test_the_import_reader_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy\n\ndef g():\n    from models.nefes import load_nefes\n    import dataset_loaders.scene\n")
    assert _imported_packages(f) == {"models", "dataset_loaders"}


@pytest.mark.parametrize("package, blocked", [("dataset_loaders", ("models", "dm")), ("models", ("config", "dataset_loaders", "dm"))])
def test_modules_import_with_the_forbidden_packages_blocked(package, blocked):
    """The same rule by really importing every module (a None entry in sys.modules blocks a package)."""
    mods = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in _py_files(package)]
    mods = [m[: -len(".__init__")] if m.endswith(".__init__") else m for m in mods]
    code = (f"import sys\nfor b in {blocked!r}: sys.modules[b] = None\n"
            f"import importlib\nfor m in {mods!r}: importlib.import_module(m)\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _exits_outside_main(path: Path) -> list[int]:
    """Lines that raise SystemExit or call sys.exit / exit() outside ``if __name__ == "__main__":``."""
    tree = ast.parse(path.read_text(), str(path))
    main_blocks = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    skip = {id(x) for b in main_blocks for x in ast.walk(b)}
    lines = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.exit", "exit", "quit", "os._exit"):
            lines.append(node.lineno)
    return lines


def test_library_code_raises_typed_errors_instead_of_exiting():
    found = {str(f.relative_to(REPO)): lines for pkg in LIBRARY for f in _py_files(pkg)
             if (lines := _exits_outside_main(f))}
    assert not found, f"SystemExit / sys.exit in library code (raise a core.errors class instead): {found}"
