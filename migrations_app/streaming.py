"""Streamed downloads that keep memory flat under WSGI and ASGI (under ASGI Django would
read a synchronous iterator to the end first: the blocks are pulled one at a time, in the
request's own thread where the database cursor lives)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse


def _next_block(blocks: Iterator[str]) -> str | None:
    return next(blocks, None)


async def _async_blocks(blocks: Iterator[str]) -> AsyncIterator[str]:
    pull = sync_to_async(_next_block, thread_sensitive=True)
    while (block := await pull(blocks)) is not None:
        yield block


def download_response(
    request: HttpRequest, blocks: Iterator[str], *, content_type: str, filename: str
) -> StreamingHttpResponse:
    django_request = getattr(request, "_request", request)  # DRF wraps the HttpRequest
    content = _async_blocks(blocks) if isinstance(django_request, ASGIRequest) else blocks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer it either
    return response
