"""Rules of the code base that a test can hold us to."""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", "var", "node_modules", ".git"}

# The production apps, lowest layer first: an app may import its own layer and the
# ones below it, never one above (portal, at the top, may import them all).
LAYERS = ["audit", "hosts", "vms", "migrations_app", "portal"]
# Outside production: the lab hypervisors and demo commands, the tests, the benchmarks.
# They may import any app; no production app imports them.
OUTSIDE = ["lab", "tests", "bench"]


def _project_python_files(under: Path = ROOT) -> Iterator[Path]:
    for path in under.rglob("*.py"):
        if not SKIP.intersection(path.relative_to(ROOT).parts):
            yield path


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, also the ones inside
    functions. Relative imports stay within their package, so they are left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def _violations(app: str, forbidden: set[str]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _project_python_files(ROOT / app)
        for module, line in _imports(path)
        if module.split(".")[0] in forbidden
    ]


def test_only_the_gateway_imports_libvirt():
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in _project_python_files()
        if any(module.split(".")[0] == "libvirt" for module, _line in _imports(path))
    )
    assert importers == ["hosts/gateway.py"]


def _calls_of(path: Path, module: str, function: str) -> Iterator[int]:
    """Lines of the file that call `module.function(...)`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == function
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == module
        ):
            yield node.lineno


def test_hosts_are_connected_to_through_host_connect():
    """`hosts.connections.host_connect` opens every connection to a registered host
    (ssh files first, the portal's timeout); only it calls `gateway.connect`."""
    callers = sorted(
        f"{path.relative_to(ROOT)}:{line}"
        for app in LAYERS
        for path in _project_python_files(ROOT / app)
        for line in _calls_of(path, "gateway", "connect")
    )
    assert [caller.partition(":")[0] for caller in callers] == ["hosts/connections.py"], callers


def test_apps_import_only_their_own_layer_and_those_below():
    violations = [
        violation
        for rank, app in enumerate(LAYERS)
        for violation in _violations(app, set(LAYERS[rank + 1 :]))
    ]
    assert violations == [], "an app imports a higher layer:\n" + "\n".join(violations)


def test_production_apps_do_not_import_the_lab_tests_or_benchmarks():
    violations = [v for app in LAYERS for v in _violations(app, set(OUTSIDE))]
    assert violations == [], "production code imports non-production code:\n" + "\n".join(
        violations
    )


def test_every_package_has_its_place():
    """A new top-level package (e.g. an app) must be put in a layer or outside."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages <= set(LAYERS) | set(OUTSIDE), sorted(packages - set(LAYERS) - set(OUTSIDE))


def test_the_rule_sees_a_violation(tmp_path):
    """The checks above would notice an import from a higher layer, even a lazy one."""
    module = tmp_path / "module.py"
    module.write_text("def f():\n    from vms.models import VM\n    import lab.core\n")
    assert list(_imports(module)) == [("vms.models", 2), ("lab.core", 3)]
