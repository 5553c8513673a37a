"""System checks of the hosts app."""

from __future__ import annotations

import os

from django.core.checks import Error, register


@register()
def ssh_key_not_a_file_of_the_deployment(app_configs, **kwargs) -> list[Error]:
    """The ssh key lives in the database: a key file set per node would differ between nodes."""
    if "PORTAL_SSH_KEY_PATH" not in os.environ:
        return []
    return [
        Error(
            "PORTAL_SSH_KEY_PATH is no longer read: the portal's ssh key is kept in the "
            "database (encrypted) and every node materialises it in its data folder.",
            hint=(
                "Unset it. To keep using that key, import it once: "
                "manage.py portal_credentials import-ssh-key "
                f"{os.environ['PORTAL_SSH_KEY_PATH']} (see docs/nodes.md)."
            ),
            id="hosts.E001",
        )
    ]
