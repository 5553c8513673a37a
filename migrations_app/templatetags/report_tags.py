"""Filters of the migration report page. Numbers in the request's language (a decimal
comma in Portuguese); the unit symbols are the same in every language."""

from django import template
from django.utils.formats import number_format

register = template.Library()


def _decimal(value: float, places: int) -> str:
    # number_format cuts the other decimals off: rounded first, as "%.1f" does.
    return number_format(round(value, places), decimal_pos=places)


@register.filter
def duration_ms(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    if value < 1000:
        return f"{_decimal(value, 0)} ms"
    if value < 120_000:
        return f"{_decimal(value / 1000, 1)} s"
    return f"{_decimal(value / 60_000, 1)} min"


@register.filter
def bytes_human(value) -> str:
    value = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{_decimal(value, 1)} {unit}" if unit != "B" else f"{_decimal(value, 0)} B"
        value /= 1024
    return f"{_decimal(value, 1)} PiB"


@register.filter
def percent(value) -> str:
    return "–" if value is None else f"{_decimal(100 * value, 1)} %"
