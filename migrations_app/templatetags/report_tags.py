"""Filters of the migration report page."""

from django import template

register = template.Library()


@register.filter
def duration_ms(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 120_000:
        return f"{value / 1000:.1f} s"
    return f"{value / 60_000:.1f} min"


@register.filter
def bytes_human(value) -> str:
    value = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1024
    return f"{value:.1f} PiB"


@register.filter
def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"
