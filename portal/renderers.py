"""The API's JSON renderer: orjson, ~7 times faster than the standard library's encoder
on a page (docs/performance.md), with the same output: every value orjson does not know
natively is converted by DRF's own encoder, so its formats are kept. List rows rendered
by PostgreSQL (core.api.sql_rows) are embedded as it wrote them: the same values, with a
space around each colon and after each comma inside the row."""

from __future__ import annotations

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_drf_default = JSONEncoder().default


class JSONRenderer(renderers.JSONRenderer):
    def renders_fragments(self, accepted_media_type: str | None) -> bool:
        """Does this answer embed orjson.Fragment (JSON made elsewhere, e.g. rows
        PostgreSQL rendered: core.api.sql_rows) as it is? Not when pretty printed."""
        return self.get_indent(accepted_media_type or "", {}) is None

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        renderer_context = renderer_context or {}
        if self.get_indent(accepted_media_type or "", renderer_context) is not None:
            # Pretty printing asked for (e.g. "application/json; indent=4"): DRF's own.
            return super().render(data, accepted_media_type, renderer_context)
        body = orjson.dumps(data, default=_drf_default, option=_OPTIONS)
        # As DRF: U+2028/U+2029 are valid JSON but end a line in JavaScript.
        if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
            body = body.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return body
