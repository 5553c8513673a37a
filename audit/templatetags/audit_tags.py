import json

from django import template

register = template.Library()


@register.filter
def as_json(value) -> str:
    """Compact, readable JSON of a before/after/detail value (autoescaped by the template)."""
    if value in (None, {}, []):
        return ""
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
