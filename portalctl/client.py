"""The portal's REST API over HTTP (standard library only), and its answers' errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

from portalctl.config import Config


class ApiError(Exception):
    """The portal answered with an error status; `message` is its reason in plain words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Unreachable(Exception):
    """No answer from the portal (exit 69)."""


def error_message(body: object) -> str:
    """The portal's error body (docs/api.md "Error bodies") as one line: `detail`, or each
    field with its reasons."""
    if isinstance(body, dict):
        if set(body) == {"detail"}:
            return str(body["detail"])
        parts = []
        for field, reasons in body.items():
            if isinstance(reasons, list) and all(isinstance(r, str) for r in reasons):
                text = " ".join(reasons)
            elif isinstance(reasons, (dict, list)):
                text = error_message(reasons)
            else:
                text = str(reasons)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(body, list):
        return "; ".join(error_message(item) for item in body if item)
    return str(body)


class Portal:
    def __init__(self, config: Config, *, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout

    def _request(self, method: str, path: str, *, query: dict | None = None, body=None):
        url = self.config.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.config.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = error_message(json.loads(raw))
            except ValueError:
                message = raw.decode(errors="replace").strip()[:300] or exc.reason
            raise ApiError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"cannot reach {self.config.url}: {reason}") from None

    def get(self, path: str, **query) -> dict | list:
        with self._request("GET", path, query=query) as answer:
            return json.load(answer)

    def post(self, path: str, body: dict | None = None) -> dict:
        with self._request("POST", path, body=body or {}) as answer:
            return json.load(answer)

    def download(self, path: str, **query) -> bytes:
        with self._request("GET", path, query=query) as answer:
            return answer.read()

    def pages(self, path: str, **query) -> Iterator[dict]:
        """Every row of a list, following its `next` links (page numbers or cursors)."""
        answer = self.get(path, **query)
        while True:
            if isinstance(answer, list):  # an unpaginated list
                yield from answer
                return
            yield from answer["results"]
            if not answer.get("next"):
                return
            # The link's path and query, on our URL: the portal may sit behind a proxy.
            link = urllib.parse.urlsplit(answer["next"])
            answer = self.get(f"{link.path}?{link.query}")
