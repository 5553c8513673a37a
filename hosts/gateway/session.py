"""libvirt sessions: bounded opens, keepalive on one event-loop thread per process, errors
translated to the hypervisor vocabulary, state codes named."""

from __future__ import annotations

import logging
import os
import threading

import libvirt

from hosts.hypervisor import (
    DomainNotFound,
    DomainState,
    GatewayError,
    HostUnreachable,
)
from hosts.hypervisor import HostRefused as HostRefused  # callers catch gateway.HostRefused
from hosts.networks import libvirt_endpoint_probe

# libvirt prints every error to stderr by default; we raise them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

logger = logging.getLogger(__name__)

# Client keepalive (what bounds every call on an open connection): a host that stops
# answering is given up after about interval x (count + 1) seconds.
KEEPALIVE_INTERVAL_S = int(os.environ.get("PORTAL_LIBVIRT_KEEPALIVE_INTERVAL_S", "5"))
KEEPALIVE_COUNT = int(os.environ.get("PORTAL_LIBVIRT_KEEPALIVE_COUNT", "3"))

_event_loop_lock = threading.Lock()
_event_loop_pid: int | None = None


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:  # never let the loop die: keepalive depends on it
            logger.exception("libvirt event loop")


def _ensure_event_loop() -> None:
    """Keepalive needs a client event loop: one thread per process (a fork starts its own)."""
    global _event_loop_pid
    with _event_loop_lock:
        if _event_loop_pid == os.getpid():
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_pid = os.getpid()


def keepalive_bound_s() -> float:
    """The longest a call on an open connection to a silent host can block."""
    return float(KEEPALIVE_INTERVAL_S * (KEEPALIVE_COUNT + 1))


DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NO_STATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.SUSPENDED,
}


def _message(error: libvirt.libvirtError) -> str:
    return (error.get_error_message() or str(error)).strip()


def _open_with_timeout(uri: str, timeout: float) -> libvirt.virConnect:
    result: dict = {}

    def target() -> None:
        try:
            result["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            result["error"] = exc

    opener = threading.Thread(target=target, daemon=True, name=f"libvirt-open {uri}")
    opener.start()
    opener.join(timeout)
    if opener.is_alive():
        # The thread cannot be killed; it ends by itself when libvirt gives up.
        raise HostUnreachable(f"{uri} did not complete the libvirt handshake within {timeout:g} s")
    if "error" in result:
        raise HostUnreachable(f"cannot open {uri}: {_message(result['error'])}")
    return result["conn"]


_UNREACHABLE_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
}


def _translate(exc: libvirt.libvirtError, doing: str) -> GatewayError:
    message = f"{doing}: {_message(exc)}"
    if exc.get_error_code() in _UNREACHABLE_CODES:
        return HostUnreachable(message)
    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)  # it left (migrated, undefined) after the lookup
    return GatewayError(message)


def _reasons(prefix: str) -> dict[int, str]:
    return {
        getattr(libvirt, name): name.removeprefix(prefix).lower()
        for name in dir(libvirt)
        if name.startswith(prefix)
    }


# virDomainGetState's reason codes by state, named as libvirt names them (lower case).
STATE_REASONS = {
    libvirt.VIR_DOMAIN_RUNNING: _reasons("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: _reasons("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTOFF: _reasons("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: _reasons("VIR_DOMAIN_CRASHED_"),
}


def state_reason(state: int, reason: int) -> str:
    """libvirt's reason code as a name ("destroyed", "user", "postcopy", ...); "" if unknown."""
    name = STATE_REASONS.get(state, {}).get(reason, "")
    return "" if name == "unknown" else name


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    """Open `uri` within `timeout` s, keepalive set (what bounds every later call on it)."""
    libvirt_endpoint_probe(uri, timeout)
    _ensure_event_loop()
    conn = _open_with_timeout(uri, timeout)
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError as exc:  # e.g. a driver without keepalive (test://)
        logger.debug("no keepalive on %s: %s", uri, _message(exc))
    return conn


def _close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
