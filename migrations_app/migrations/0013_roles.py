"""The roles besides superusers, as groups (docs/architecture.md, Roles).

Here, in migrations_app, because the groups carry permissions of audit, hosts, vms and
migrations_app, and migrations_app is the highest layer with models (portal has none).
The lists are frozen here, as a migration should be; a later change of a role is a new
migration. Django creates permissions only after all migrations (post_migrate), so this
one creates the ones it grants first, from the historical models.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

# What an ordinary logged-in user reads anyway (hosts, VMs, peer trusts), plus every
# migration and batch (an ordinary user sees only the ones they requested).
VIEWER = [
    ("hosts", "view_host"),
    ("hosts", "view_peertrust"),
    ("vms", "view_vm"),
    ("migrations_app", "view_migration"),
    ("migrations_app", "view_migrationbatch"),
]

ROLES = {
    "viewer": VIEWER,
    "operator": [*VIEWER, ("migrations_app", "migrate_vm")],
    "host admin": [*VIEWER, ("hosts", "manage_host")],
    "auditor": [("audit", "view_auditevent")],
}

APPS = ("audit", "hosts", "vms", "migrations_app")


def roles_create(apps, schema_editor):
    for label in APPS:
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in perms:
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def roles_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("audit", "0004_host_type_indexes"),
        ("hosts", "0007_manage_host_permission"),
        ("vms", "0002_inventory_sync_schedule"),
        ("migrations_app", "0012_migrate_vm_permission"),
    ]

    operations = [migrations.RunPython(roles_create, roles_delete)]
