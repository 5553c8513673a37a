"""portalctl, the command-line client, as a script runs it: the installed console script
against the production web tier (gunicorn + uvicorn, websockets), the task workers and
the lab hosts. Exit codes, progress fed by the websocket, cancel, the report."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import pytest

from audit.services import Actor
from lab import layout
from migrations_app.models import Migration
from tests import labtools
from tests.processes import ROOT
from tests.test_browser_e2e import portal  # noqa: F401 (fixture)
from tokens.services import token_create

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

PORTALCTL = ROOT / ".venv" / "bin" / "portalctl"


@pytest.fixture
def portalctl(portal, admin_user):  # noqa: F811
    if not PORTALCTL.is_file():
        pytest.fail(f"NO CLIENT: {PORTALCTL} is missing: run scripts/setup.sh", pytrace=False)
    _token, raw = token_create(
        user=admin_user, name="portalctl test", actor=Actor.system(), write_enabled=True
    )
    env = {**os.environ, "PORTALCTL_URL": portal.url, "PORTALCTL_TOKEN": raw}

    def run(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(PORTALCTL), *argv], env=env, capture_output=True, text=True, timeout=timeout
        )
        print(f"$ portalctl {' '.join(argv)} -> {done.returncode}\n{done.stderr[-1500:]}")
        return done

    run.env = env
    run.web_log = portal.log
    return run


def test_hosts_vms_migrate_wait_and_the_report(portalctl, linux_vm, lab_hosts):
    hosts = portalctl("--json", "hosts")
    assert hosts.returncode == 0
    assert {h["name"] for h in json.loads(hosts.stdout)} >= {h.name for h in lab_hosts}
    vms = portalctl("vms")
    assert vms.returncode == 0 and layout.LINUX_VM_NAME in vms.stdout

    source = linux_vm.source
    destination = linux_vm.other(source)
    done = portalctl("migrate", layout.LINUX_VM_NAME, "--to", destination.name, "--wait")
    assert done.returncode == 0, done.stderr
    assert f"now runs on {destination.name}" in done.stdout
    assert ": succeeded" in done.stderr  # the progress lines end with the outcome
    assert labtools.running_on(lab_hosts, linux_vm.uuid) == [destination.name]

    # Already there: the portal refuses, the client says why and fails.
    again = portalctl("migrate", layout.LINUX_VM_NAME, "--to", destination.name)
    assert again.returncode == 64, again
    assert "remote_host: lab-vm is already on" in again.stderr

    # A migration that cannot finish in its time fails, and the exit code says so.
    slow = portalctl(
        "--json", "migrate", layout.LINUX_VM_NAME, "--to", source.name,
        "--bandwidth", "1", "--timeout", "2", "--wait",
    )  # fmt: skip
    assert slow.returncode == 1, slow.stderr
    assert json.loads(slow.stdout)["failure_reason"] == "timeout"
    assert labtools.running_on(lab_hosts, linux_vm.uuid) == [destination.name]

    report = portalctl("report", "--since", "1h", "--format", "csv")
    assert report.returncode == 0
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    outcomes = [row for row in rows if layout.LINUX_VM_NAME in row.values()]
    assert len(outcomes) == 2, rows

    plan = portalctl("--json", "evacuate", destination.name, "--dry-run")
    assert plan.returncode == 0
    assert json.loads(plan.stdout)["dry_run"] is True
    negative = portalctl("evacuate", destination.name, "--dry-run", "--bandwidth", "-1")
    assert negative.returncode == 64 and "bandwidth_mib_s:" in negative.stderr, negative
    unknown = portalctl("evacuate", "no-such-host", "--dry-run")
    assert unknown.returncode == 64 and "no host named 'no-such-host'" in unknown.stderr


def test_cancel_from_another_shell_ends_the_waiting_one_with_2(portalctl, linux_vm, lab_hosts):
    source = linux_vm.source
    waiting = subprocess.Popen(
        [str(PORTALCTL), "--json", "migrate", layout.LINUX_VM_NAME,
         "--to", linux_vm.other(source).name, "--bandwidth", "5", "--wait"],
        env=portalctl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        migration = labtools.wait_for(
            lambda: Migration.objects.filter(vm_uuid=linux_vm.uuid, status="migrating").first(),
            timeout=90,
            what="the migration to start copying",
        )
        labtools.wait_until_migrating(migration.pk, min_percent=1.0)
        cancel = portalctl("cancel", str(migration.pk))
        assert cancel.returncode == 0, cancel.stderr
        out, err = waiting.communicate(timeout=120)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    print(err[-2000:])
    assert waiting.returncode == 2, err
    assert json.loads(out)["status"] == "cancelled"
    # Fed by the websocket (the web tier logs its handshake), line after line as it copied.
    accepted = f'"WebSocket /ws/migrations/{migration.pk}/" [accepted]'
    assert accepted in portalctl.web_log.read_text()
    assert sum(" %" in line for line in err.splitlines()) >= 2, err
    assert labtools.running_on(lab_hosts, linux_vm.uuid) == [source.name]
