"""Host groups and the roles granted on them. Every existing host goes into the group
"default", so nothing that worked before changes (one group: no crossing)."""

import django.db.models.deletion
import hosts.validators
from django.conf import settings
from django.db import migrations, models


def hosts_into_default(apps, schema_editor):
    HostGroup = apps.get_model("hosts", "HostGroup")
    Host = apps.get_model("hosts", "Host")
    default, _ = HostGroup.objects.get_or_create(
        name="default", defaults={"description": "Every host registered before host groups."}
    )
    Host.objects.filter(group__isnull=True).update(group=default)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("hosts", "0010_ssh_host_key_validated"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="HostGroup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        error_messages={"unique": "A host group with this name already exists."},
                        max_length=64,
                        unique=True,
                        validators=[hosts.validators.validate_uri_safe],
                    ),
                ),
                ("description", models.CharField(blank=True, max_length=500)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.AddField(
            model_name="host",
            name="group",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="hosts",
                to="hosts.hostgroup",
            ),
        ),
        migrations.RunPython(hosts_into_default, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="host",
            name="group",
            field=models.ForeignKey(
                help_text="The host group: VMs move between the hosts of one group.",
                on_delete=django.db.models.deletion.PROTECT,
                related_name="hosts",
                to="hosts.hostgroup",
            ),
        ),
        migrations.CreateModel(
            name="HostGroupGrant",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "role",
                    models.CharField(
                        choices=[
                            ("viewer", "viewer"),
                            ("operator", "operator"),
                            ("host admin", "host admin"),
                        ],
                        max_length=16,
                    ),
                ),
                ("source", models.CharField(blank=True, default="", max_length=16)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "group",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="host_group_grants",
                        to="auth.group",
                    ),
                ),
                (
                    "host_group",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="grants",
                        to="hosts.hostgroup",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="host_group_grants",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["host_group__name", "role"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("group__isnull", True), ("user__isnull", False)),
                            models.Q(("group__isnull", False), ("user__isnull", True)),
                            _connector="OR",
                        ),
                        name="hostgroupgrant_user_xor_group",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("user__isnull", False)),
                        fields=("host_group", "role", "user"),
                        name="hostgroupgrant_unique_user",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("group__isnull", False)),
                        fields=("host_group", "role", "group"),
                        name="hostgroupgrant_unique_group",
                    ),
                ],
            },
        ),
    ]
