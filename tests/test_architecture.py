"""Rules of the code base that a test can hold us to."""

import ast
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", "var", "node_modules", ".git"}

# The production packages, lowest layer first (core: what every app uses): each may
# import its own layer and the ones below it, never one above (portal, at the top,
# may import them all).
LAYERS = ["core", "audit", "tokens", "hosts", "vms", "migrations_app", "listeners", "portal"]
# Outside production: the lab hypervisors and demo commands, the tests, the benchmarks.
# They may import any app; no production app imports them.
OUTSIDE = ["lab", "tests", "bench"]
# The command-line client talks to the portal over HTTP only: it stands apart from both.
CLIENT = "portalctl"


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
    assert importers and all(path.startswith("hosts/gateway/") for path in importers), importers


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
    known = set(LAYERS) | set(OUTSIDE) | {CLIENT}
    assert packages <= known, sorted(packages - known)


def test_the_client_imports_only_the_standard_library_and_websockets():
    """portalctl runs where the portal is not installed: nothing of the server, no Django."""
    allowed = set(sys.stdlib_module_names) | {"websockets", CLIENT}
    strays = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _project_python_files(ROOT / CLIENT)
        for module, line in _imports(path)
        if module.split(".")[0] not in allowed
    ]
    assert strays == [], strays


def test_the_rule_sees_a_violation(tmp_path):
    """The checks above would notice an import from a higher layer, even a lazy one."""
    module = tmp_path / "module.py"
    module.write_text("def f():\n    from vms.models import VM\n    import lab.core\n")
    assert list(_imports(module)) == [("vms.models", 2), ("lab.core", 3)]


# The parts of migrations_app, lowest first: a module may import its own part and the
# ones below, never one above (docs/architecture.md draws them).
MIGRATIONS_APP_PARTS = [
    {"domain"},
    {"models", "migrations", "apps", "permissions", "filters"},
    {"serializers", "events", "webhooks", "streaming"},
    {"transitions"},
    {"prechecks"},
    {"selectors"},
    {"scheduling"},
    {"worker"},
    {"requests"},
    {"batches", "evacuation", "attention"},
    {
        "reports",
        "report_exports",
        "consumers",
        "tasks",
        "management",
        "api",
        "admin",
        "urls",
        "views",
    },
    {"templatetags", "__init__"},
]


def _part_of(module_path: tuple[str, ...]) -> int:
    name = module_path[0].removesuffix(".py")
    ranks = [rank for rank, part in enumerate(MIGRATIONS_APP_PARTS) if name in part]
    assert ranks, f"migrations_app/{name} has no part in MIGRATIONS_APP_PARTS"
    return ranks[0]


def _runtime_imports(path: Path) -> Iterator[tuple[str, int]]:
    """`_imports` without the ones under `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for child in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def _intra_app_violations() -> list[str]:
    app = ROOT / "migrations_app"
    found = []
    for path in _project_python_files(app):
        own = _part_of(path.relative_to(app).parts)
        for module, line in _runtime_imports(path):
            parts = module.split(".")
            if parts[0] == "migrations_app" and len(parts) > 1 and _part_of((parts[1],)) > own:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_migrations_app_parts_import_only_their_own_and_those_below():
    violations = _intra_app_violations()
    assert violations == [], "a part of migrations_app imports a higher one:\n" + "\n".join(
        violations
    )


def test_no_function_level_imports_between_the_parts_of_migrations_app():
    """Every import of another part sits at the top of the module, where the order
    above is plain to see."""
    found = []
    for path in _project_python_files(ROOT / "migrations_app"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "migrations_app"
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert found == [], "\n".join(found)


# --- the vocabulary (migrations_app/lifecycle.py, audit/events.py) ----------------------

# The one place where a failure may still be classified by its error text: the data
# migration that gave the rows recorded before `failure_reason` existed their reason.
CLASSIFYING_MIGRATION = ROOT / "migrations_app/migrations/0005_classify_failure_reasons.py"
TEXT_LOOKUP = re.compile(r"\berror__i?(contains|startswith|endswith|regex|exact)\b")


def _production_files() -> Iterator[Path]:
    for app in [*LAYERS, "lab"]:
        yield from _project_python_files(ROOT / app)


def test_failures_are_not_classified_by_their_text():
    """Why a migration failed is `Migration.failure_reason`, recorded by the engine:
    nothing reads it back out of the error text."""
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _production_files()
        if path != CLASSIFYING_MIGRATION
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TEXT_LOOKUP.search(line)
    ]
    assert found == [], "failures classified by their text:\n" + "\n".join(found)
    assert TEXT_LOOKUP.search(CLASSIFYING_MIGRATION.read_text())  # the rule still sees them


def test_audit_event_types_are_written_from_the_enum():
    """A string that is an event type appears only in audit/events.py (and in the
    frozen database migrations): writers pass EventType members."""
    from audit.events import EventType

    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for path in _production_files()
        if path != ROOT / "audit/events.py" and path.parent.name != "migrations"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in EventType.values
    ]
    assert found == [], "event types written as strings:\n" + "\n".join(found)


def test_every_event_type_is_documented():
    from audit.events import EventType

    documented = (ROOT / "docs/audit.md").read_text()
    missing = [value for value in EventType.values if f"`{value}`" not in documented]
    assert missing == [], f"docs/audit.md does not list {missing}"


@pytest.mark.django_db
def test_the_models_and_their_migrations_agree():
    """A change of the vocabulary's choices (a new failure reason, a phase) comes with
    its database migration."""
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:
        pytest.fail("models changed without a migration:\n" + out.getvalue())
