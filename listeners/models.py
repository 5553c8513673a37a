from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import pgettext_lazy

from core.db import DbNow
from hosts.models import Host


class ListenerState(models.TextChoices):
    CONNECTING = "connecting", pgettext_lazy("event listener state", "Connecting")
    LISTENING = "listening", pgettext_lazy("event listener state", "Listening")
    RETRYING = "retrying", pgettext_lazy("event listener state", "Reconnecting")


class HostListener(models.Model):
    """The lease on one host's event listener: the worker process (`owner`) that holds it
    listens; every write it makes is a compare-and-set on `epoch`, so a process that lost
    the lease (taken over after LISTENER_STALE_AFTER_S without a heartbeat) writes no more."""

    host = models.OneToOneField(
        Host, on_delete=models.CASCADE, primary_key=True, related_name="listener"
    )
    owner = models.CharField(max_length=200, blank=True)
    epoch = models.PositiveBigIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(
        max_length=16, choices=ListenerState.choices, default=ListenerState.CONNECTING
    )
    state_since = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    events_seen = models.PositiveBigIntegerField(default=0)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"listener of host {self.host_id}"


def lease_stale() -> Q:
    """No heartbeat for LISTENER_STALE_AFTER_S (or none), on the database's clock."""
    stale_before = DbNow() - timedelta(seconds=settings.LISTENER_STALE_AFTER_S)
    return Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale_before)


def listening() -> Q:
    """A listener that is connected and whose owner is alive: polling may skip its host."""
    return Q(state=ListenerState.LISTENING) & ~lease_stale()
