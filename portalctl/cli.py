"""`portalctl`: hosts, VMs, migrations, evacuations, batches and reports from a shell.

Exit codes: 0 succeeded, 1 failed (or refused by the portal), 2 cancelled, 3 needs
attention, 64 usage (also a 400 from the portal), 69 portal unreachable, 77 no
permission (401/403), 78 configuration."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from portalctl import render
from portalctl.client import ApiError, Portal, Unreachable
from portalctl.config import ConfigError, config_resolve
from portalctl.follow import follow


class UsageError(Exception):
    """The command line names something wrong (exit 64)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own exit status 2 is "cancelled" here
        self.print_usage(sys.stderr)
        self.exit(render.EXIT_USAGE, f"{self.prog}: error: {message}\n")


_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def when(text: str, *, now: datetime | None = None) -> str:
    """`--since`/`--until`: an ISO date or date-time, or an age like 30m, 24h, 7d, 2w."""
    now = now or datetime.now(UTC)
    relative = _RELATIVE.match(text)
    if relative:
        delta = timedelta(**{_UNITS[relative[2]]: int(relative[1])})
        return (now - delta).isoformat(timespec="seconds")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date/time nor an age like 24h or 7d"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def migration_options(args: argparse.Namespace) -> dict:
    """The migrate/batch options the command line gave; the portal's defaults for the rest."""
    chosen = {
        "live": args.live,
        "storage": args.storage,
        "transport": args.transport,
        "bandwidth_mib_s": args.bandwidth,
        "max_downtime_ms": args.max_downtime,
        "convergence_policy": args.policy,
        "allow_postcopy": True if args.postcopy else None,
        "auto_converge": True if args.auto_converge else None,
        "tls": True if args.tls else None,
        "delete_source": True if args.delete_source else None,
        "timeout_s": args.timeout,
    }
    return {key: value for key, value in chosen.items() if value is not None}


def _add_migration_options(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--live",
        dest="live",
        action="store_const",
        const=True,
        default=None,
        help="live (the VM keeps running); the default for a running VM",
    )
    mode.add_argument(
        "--offline",
        dest="live",
        action="store_const",
        const=False,
        help="move the definition of a shut-off VM",
    )
    parser.add_argument("--storage", choices=("shared", "copy"))
    parser.add_argument("--transport", choices=("direct", "tunnelled"))
    parser.add_argument("--bandwidth", type=int, metavar="MIB_S", help="cap in MiB/s")
    parser.add_argument("--max-downtime", type=int, metavar="MS")
    parser.add_argument(
        "--policy",
        metavar="POLICY",
        help="convergence policy, e.g. postcopy_when_stalled (docs/migration-policies.md)",
    )
    parser.add_argument("--postcopy", action="store_true", help="allow post-copy")
    parser.add_argument("--auto-converge", action="store_true")
    parser.add_argument("--tls", action="store_true", help="encrypt the migration stream")
    parser.add_argument(
        "--delete-source", action="store_true", help="undefine the VM on the source afterwards"
    )
    parser.add_argument("--timeout", type=int, metavar="S")


def parser_build() -> argparse.ArgumentParser:
    parser = _Parser(prog="portalctl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the portal, e.g. https://portal.example (PORTALCTL_URL)")
    parser.add_argument("--token", help="an API token (PORTALCTL_TOKEN; better: the config file)")
    parser.add_argument("--config", help="config file (default ~/.config/portalctl/config.toml)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("hosts", help="the registered hosts")
    vms = commands.add_parser("vms", help="the VMs of the inventory")
    vms.add_argument("--host", help="only the VMs of this host (name)")
    vms.add_argument("--state", help="only VMs in this state, e.g. running")

    migrate = commands.add_parser("migrate", help="migrate a VM (name or UUID)")
    migrate.add_argument("vm")
    migrate.add_argument("--to", required=True, metavar="HOST", help="destination name or address")
    migrate.add_argument("--new-name", help="the VM's name on the destination")
    _add_migration_options(migrate)
    migrate.add_argument("--wait", action="store_true", help="follow it to its end")

    show = commands.add_parser("show", help="a migration's state")
    show.add_argument("migration", type=int)
    wait = commands.add_parser("wait", help="follow a migration to its end")
    wait.add_argument("migration", type=int)
    cancel = commands.add_parser("cancel", help="cancel a migration")
    cancel.add_argument("migration", type=int)
    cancel.add_argument("--wait", action="store_true")

    evacuate = commands.add_parser("evacuate", help="move every VM off a host")
    evacuate.add_argument("host", help="name, address or id")
    evacuate.add_argument("--dry-run", action="store_true", help="only show the plan")
    evacuate.add_argument("--reason", default="", help="the maintenance reason")
    evacuate.add_argument(
        "--bandwidth", type=int, default=0, help="MiB/s per migration (0: unlimited)"
    )
    evacuate.add_argument("--wait", action="store_true")

    batch = commands.add_parser("batch", help="migrate several VMs as one batch")
    batch.add_argument("vms", nargs="+", metavar="VM")
    batch.add_argument("--to", metavar="HOST", help="destination (default: the best fit each)")
    batch.add_argument("--parallel", type=int, default=1, metavar="N")
    batch.add_argument("--stop-on-failure", action="store_true")
    _add_migration_options(batch)
    batch.add_argument("--wait", action="store_true")

    report = commands.add_parser("report", help="the migration report")
    report.add_argument("--since", type=when, help="ISO date/time or an age: 24h, 7d")
    report.add_argument("--until", type=when)
    report.add_argument("--vm")
    report.add_argument("--host")
    report.add_argument("--format", choices=("csv", "json"), default="csv")
    report.add_argument("--output", "-o", help="write to this file instead of stdout")
    return parser


def vm_resolve(portal: Portal, text: str) -> dict:
    if _UUID.match(text):
        return portal.get(f"/api/vms/{text}/")
    found = [vm for vm in portal.pages("/api/vms/", search=text) if vm["name"] == text]
    if not found:
        raise UsageError(f"no VM named {text!r} (portalctl vms lists them)")
    uuids = sorted({vm["uuid"] for vm in found})
    if len(uuids) > 1:
        raise UsageError(f"several VMs are named {text!r}: give the UUID ({', '.join(uuids)})")
    # One VM defined on several hosts (a definition left behind): the copy that runs.
    return next((vm for vm in found if vm["state"] == "running"), found[0])


def host_resolve(portal: Portal, text: str) -> dict:
    hosts = list(portal.pages("/api/hosts/"))
    for key in ("name", "address"):
        found = [host for host in hosts if host[key] == text]
        if len(found) == 1:
            return found[0]
    if text.isdigit():
        for host in hosts:
            if host["id"] == int(text):
                return host
    raise UsageError(f"no host named {text!r} (portalctl hosts lists them)")


class Out:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.live = sys.stderr.isatty()

    def data(self, value, text: str) -> None:
        print(json.dumps(value, indent=2, default=str) if self.as_json else text)

    def progress(self, line: str, *, final: bool = False) -> None:
        if self.live:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _follow_migration(portal: Portal, out: Out, ident: int) -> int:
    last_line, state = None, None
    final = lambda m: m["status"] in render.MIGRATION_FINAL  # noqa: E731
    for state in follow(portal, kind="migration", ident=ident, final=final):
        line = render.migration_line(state)
        if line != last_line:
            out.progress(line, final=final(state))
            last_line = line
    out.data(state, render.migration_summary(state))
    return render.MIGRATION_FINAL[state["status"]]


def _follow_batch(portal: Portal, out: Out, ident: int) -> int:
    state = None
    final = lambda b: b["status"] in render.BATCH_FINAL  # noqa: E731
    for state in follow(portal, kind="batch", ident=ident, final=final):
        out.progress(render.batch_line(state), final=final(state))
    out.data(state, render.batch_line(state))
    return render.BATCH_FINAL[state["status"]]


def run(args: argparse.Namespace, portal: Portal, out: Out) -> int:
    command = args.command
    if command == "hosts":
        hosts = list(portal.pages("/api/hosts/"))
        rows = [
            (
                h["id"],
                h["name"],
                h["address"],
                h["transport"],
                h["status"],
                "yes" if h["maintenance"] else "",
                f"{h['running_vm_count']}/{h['vm_count']}",
            )
            for h in hosts
        ]
        out.data(
            hosts,
            render.table(
                rows, ("ID", "NAME", "ADDRESS", "TRANSPORT", "STATUS", "MAINTENANCE", "RUNNING/VMS")
            ),
        )
        return render.EXIT_SUCCEEDED
    if command == "vms":
        query = {"state": args.state}
        if args.host:
            query["host"] = host_resolve(portal, args.host)["id"]
        vms = list(portal.pages("/api/vms/", **query))
        rows = [
            (v["name"], v["uuid"], v["host"], v["state"], f"{v['memory_mib']} MiB") for v in vms
        ]
        out.data(vms, render.table(rows, ("NAME", "UUID", "HOST", "STATE", "MEMORY")))
        return render.EXIT_SUCCEEDED
    if command == "migrate":
        vm = vm_resolve(portal, args.vm)
        body = {"remote_host": args.to, **migration_options(args)}
        if args.new_name:
            body["new_name"] = args.new_name
        migration = portal.post(f"/api/vms/{vm['uuid']}/migrate/", body)
        if not args.wait:
            out.data(
                migration,
                f"migration #{migration['id']} {migration['status']}: "
                f"{vm['name']} {migration['source']} -> {migration['destination']}",
            )
            return render.EXIT_SUCCEEDED
        return _follow_migration(portal, out, migration["id"])
    if command == "show":
        migration = portal.get(f"/api/migrations/{args.migration}/")
        out.data(migration, render.migration_line(migration))
        return render.MIGRATION_FINAL.get(migration["status"], render.EXIT_SUCCEEDED)
    if command == "wait":
        return _follow_migration(portal, out, args.migration)
    if command == "cancel":
        migration = portal.post(f"/api/migrations/{args.migration}/cancel/")
        if args.wait:
            return _follow_migration(portal, out, args.migration)
        out.data(
            migration, f"migration #{migration['id']}: cancel requested ({migration['status']})"
        )
        return render.EXIT_SUCCEEDED
    if command == "evacuate":
        host = host_resolve(portal, args.host)
        body = {"dry_run": args.dry_run, "reason": args.reason, "bandwidth_mib_s": args.bandwidth}
        plan = portal.post(f"/api/hosts/{host['id']}/evacuate/", body)
        rows = [(m["vm_name"], m["destination"], m["wave"]) for m in plan["migrations"]]
        text = render.table(rows, ("VM", "TO", "WAVE"))
        for vm in plan["unmovable"]:
            text += f"\nstays: {vm['vm_name']} ({'; '.join(vm['reasons'])})"
        if plan["batch"] is None or not args.wait:
            out.data(plan, text)
            return render.EXIT_SUCCEEDED
        out.progress(text, final=True)
        outcome = _follow_batch(portal, out, plan["batch"])
        # The host is not empty while a VM stays: a script must not take it down.
        return outcome if outcome or not plan["unmovable"] else render.EXIT_FAILED
    if command == "batch":
        items = [{"vm": vm_resolve(portal, name)["uuid"]} for name in args.vms]
        if args.to:
            for item in items:
                item["destination"] = args.to
        batch = portal.post(
            "/api/migration-batches/",
            {
                "items": items,
                "options": migration_options(args),
                "max_parallel": args.parallel,
                "stop_on_failure": args.stop_on_failure,
            },
        )
        if not args.wait:
            out.data(batch, render.batch_line(batch))
            return render.EXIT_SUCCEEDED
        return _follow_batch(portal, out, batch["id"])
    if command == "report":
        query = {"since": args.since, "until": args.until, "vm": args.vm, "host": args.host}
        body = portal.download(f"/api/reports/migrations/export.{args.format}", **query)
        if args.output:
            with open(args.output, "wb") as f:
                f.write(body)
        else:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        return render.EXIT_SUCCEEDED
    raise UsageError(f"unknown command {command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser_build().parse_args(argv)
    try:
        config = config_resolve(
            url=args.url, token=args.token, config_file=args.config, environ=dict(os.environ)
        )
    except ConfigError as exc:
        print(f"portalctl: {exc}", file=sys.stderr)
        return render.EXIT_CONFIG
    out = Out(args.json)
    try:
        return run(args, Portal(config), out)
    except UsageError as exc:
        print(f"portalctl: {exc}", file=sys.stderr)
        return render.EXIT_USAGE
    except ApiError as exc:
        print(f"portalctl: the portal answered {exc.status}: {exc.message}", file=sys.stderr)
        return render.exit_code_for_api_status(exc.status)
    except Unreachable as exc:
        print(f"portalctl: {exc}", file=sys.stderr)
        return render.EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print(
            "portalctl: interrupted (the migration goes on; portalctl cancel ID stops it)",
            file=sys.stderr,
        )
        return 130
