"""Helpers of the server-rendered pages' filter forms."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def local_input(value: str | datetime) -> str:
    """A time as a datetime-local input shows it (UTC), or the text as it was typed."""
    if isinstance(value, str):
        parsed = parse_datetime(value.strip()) if value else None
        if parsed is None:
            return value
        value = parsed
    if timezone.is_aware(value):
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M")


def error_lines(exc: ValidationError) -> list[str]:
    return [f"{field}: {m}" for field, ms in exc.message_dict.items() for m in ms]
