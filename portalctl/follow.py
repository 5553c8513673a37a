"""Follow a migration or batch to its end: the portal's websocket (the same messages the
progress view gets), or polling the API when the websocket cannot be opened."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

from portalctl.client import Portal

POLL_S = 2.0


def _ws_url(portal: Portal, path: str) -> str:
    base = portal.config.url
    return (
        "wss://" + base[len("https://") :]
        if base.startswith("https://")
        else "ws://" + base[len("http://") :]
    ) + path


def _over_websocket(portal: Portal, path: str, key: str) -> Iterator[dict]:
    from websockets.sync.client import connect  # only the following commands need it

    headers = {"Authorization": f"Bearer {portal.config.token}"}
    with connect(
        _ws_url(portal, path),
        additional_headers=headers,
        origin=portal.config.url,
        open_timeout=portal.timeout,
        ping_interval=20,
        ping_timeout=60,
    ) as socket:
        for raw in socket:
            message = json.loads(raw)
            if key in message:
                yield message[key]


def _over_polling(portal: Portal, api_path: str, final: Callable[[dict], bool]) -> Iterator[dict]:
    while True:
        state = portal.get(api_path)
        yield state
        if final(state):
            return
        time.sleep(POLL_S)


def follow(
    portal: Portal, *, kind: str, ident: int, final: Callable[[dict], bool]
) -> Iterator[dict]:
    """Each new state of migration or batch `ident`, the final one last."""
    ws_path = f"/ws/{'migrations' if kind == 'migration' else 'migration-batches'}/{ident}/"
    api_path = f"/api/{'migrations' if kind == 'migration' else 'migration-batches'}/{ident}/"
    last = None
    try:
        for state in _over_websocket(portal, ws_path, kind):
            last = state
            yield state
            if final(state):
                return
    except Exception:  # noqa: BLE001 - refused, closed, a proxy without websockets
        pass  # the API answers the same states
    # The socket closed (the portal closes it at the end) or failed: the API says where it is.
    for state in _over_polling(portal, api_path, final):
        if state != last:
            yield state
