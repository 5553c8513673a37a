"""The web tier's worker class (deploy/gunicorn.conf.py): uvicorn's gunicorn worker.

New connections are spread over the workers by the kernel (SO_REUSEPORT: gunicorn's
`reuse_port`, one listening socket per worker), not by the event loop: the loop is
uvicorn's own choice (uvloop when installed), unchanged.
"""

from __future__ import annotations

from uvicorn_worker import UvicornWorker


class PortalUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": "auto"}
