from django.contrib import admin

from vms.models import VM, VMDisk


class VMDiskInline(admin.TabularInline):
    model = VMDisk
    extra = 0
    can_delete = False
    readonly_fields = ["target", "device", "path", "format", "size_bytes", "on_shared_storage"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(VM)
class VMAdmin(admin.ModelAdmin):
    """Read-only: the inventory comes from libvirt, not from typing."""

    list_display = ["name", "uuid", "host", "state", "vcpus", "memory_kib", "last_synced_at"]
    list_filter = ["state", "host", "persistent"]
    search_fields = ["name", "uuid"]
    inlines = [VMDiskInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
