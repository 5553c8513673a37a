"""Rules of the code base that a test can hold us to."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", "var", "node_modules", ".git"}


def _project_python_files():
    for path in ROOT.rglob("*.py"):
        if not SKIP.intersection(path.relative_to(ROOT).parts):
            yield path


def _imports_libvirt(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "libvirt" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "libvirt":
            return True
    return False


def test_only_the_gateway_imports_libvirt():
    importers = sorted(
        str(p.relative_to(ROOT)) for p in _project_python_files() if _imports_libvirt(p)
    )
    assert importers == ["hosts/gateway.py"]
