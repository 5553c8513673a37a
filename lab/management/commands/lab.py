"""`manage.py lab up|status|down`: the lab hypervisor hosts (see lab.lifecycle)."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lab import layout, lifecycle, machines


def config_from_settings(**overrides: object) -> layout.LabConfig:
    """The portal's lab: <DATA_DIR>/lab with the image cache in <DATA_DIR>/guest-images."""
    data_dir = Path(settings.DATA_DIR)
    values = {key: value for key, value in overrides.items() if value is not None}
    return layout.LabConfig(root=data_dir / "lab", image_cache=data_dir / "guest-images", **values)


class Command(BaseCommand):
    help = "Start, show or stop the lab hypervisor hosts (real libvirtd + QEMU + sshd)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "status", "down"])
        parser.add_argument("--hosts", type=int, default=2, help="up: number of hosts")
        parser.add_argument("--memory-mib", type=int, help="up: RAM of the Linux guest")
        parser.add_argument("--fill-mib", type=int, help="up: MiB the guest fills with data")
        parser.add_argument("--dirty-mib-s", type=int, help="up: MiB/s the guest rewrites")
        parser.add_argument(
            "--no-vms", action="store_true", help="up: do not define/start the lab VMs"
        )
        parser.add_argument(
            "--vms",
            type=int,
            help="up: N more small diskless guests on every host (<host>-extra-<k>)",
        )

    def handle(self, *args: object, **options: object) -> None:
        config = config_from_settings(
            guest_memory_mib=options["memory_mib"],
            guest_fill_mib=options["fill_mib"],
            guest_dirty_mib_s=options["dirty_mib_s"],
            start_vms=False if options["no_vms"] else None,
            extra_vms=options["vms"],
        )
        action = options["action"]
        started = time.monotonic()
        try:
            if action == "up":
                lifecycle.up(config, hosts=int(options["hosts"]))  # type: ignore[arg-type]
                self.stdout.write(f"lab up in {time.monotonic() - started:.1f} s")
                self._print_status(config)
            elif action == "down":
                lifecycle.down(config)
                self.stdout.write(f"lab down in {time.monotonic() - started:.1f} s")
            else:
                self._print_status(config)
        except layout.LabError as exc:
            raise CommandError(str(exc)) from exc

    def _print_status(self, config: layout.LabConfig) -> None:
        hosts = machines.status(config)
        if not hosts:
            self.stdout.write(f"no lab hosts in {config.root} (run: manage.py lab up)")
            return
        self.stdout.write(f"lab root: {config.root}")
        self.stdout.write(f"shared storage: {layout.shared_storage_dir(config)}")
        self.stdout.write(f"guest console: {layout.console_log_path(config)}")
        for host in hosts:
            state = "running" if host.running else "stopped"
            self.stdout.write("")
            self.stdout.write(f"{host.name}  {host.address}  {state}")
            self.stdout.write(f"  libvirt: {host.libvirt_uri}")
            self.stdout.write(f"  ssh:     {host.ssh_user}@{host.address}:{host.ssh_port}")
            self.stdout.write(f"  password: {host.ssh_password}")
            self.stdout.write(f"  local images: {layout.private_images_dir(config, host)}")
            if host.running:
                listing = machines.virsh(host, "list", "--all", check=False)
                text = (listing.stdout or listing.stderr).rstrip() or "(no VMs)"
                self.stdout.write("  VMs:")
                for line in text.splitlines():
                    self.stdout.write(f"    {line}")
