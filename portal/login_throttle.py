"""Login throttling: failed logins counted per user name and per address in the cache;
at the limit, attempts are refused (right password too) until the window ends.

A success clears its name's counter only (one valid account must not reset an address
trying many names). Every attempt is counted before its password is checked (one atomic
increment per counter, which decides), so parallel attempts cannot all pass one check
before any of them is counted; a success or a refusal gives its count back. IPv6 clients
are counted by /64 (one host usually has a whole /64 to pick addresses from).

An unreachable cache throttles nothing: a Redis outage must not lock out the
administrators who would repair it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.http import HttpRequest
from django.utils.translation import gettext, ngettext
from redis.exceptions import RedisError

from audit.events import EventType
from audit.services import audit_auth_event_record

logger = logging.getLogger(__name__)


class Scope(StrEnum):
    USERNAME = "username"
    ADDRESS = "address"


@dataclass(frozen=True)
class Lockout:
    scope: Scope
    failures: int
    retry_after_s: int

    @property
    def message(self) -> str:
        """In the request's language (shown on the login page)."""
        minutes = max(1, math.ceil(self.retry_after_s / 60))
        if self.scope == Scope.USERNAME:
            locked = gettext("Too many failed logins for this user name: logging in is locked.")
        else:
            locked = gettext("Too many failed logins from your address: logging in is locked.")
        again = ngettext(
            "Try again in %(minutes)d minute.", "Try again in %(minutes)d minutes.", minutes
        ) % {"minutes": minutes}
        return f"{locked} {again}"


def lockout_decide(*, failures: dict[Scope, int], limits: dict[Scope, int]) -> Scope | None:
    """Which counter, if any, locks the next attempt (the name's first; limit 0: off)."""
    return next((scope for scope in Scope if 0 < limits[scope] <= failures[scope]), None)


def retry_after_s(*, since: float, now: float, window_s: int) -> int:
    return max(1, math.ceil(since + window_s - now))


def client_address(request: HttpRequest | None) -> str:
    """REMOTE_ADDR, as the audit log records it (the workers set it behind the proxy)."""
    if request is None:
        return "unknown"
    return request.META.get("REMOTE_ADDR") or "unknown"


def throttled_address(address: str) -> str:
    """What an address is counted as: IPv4 as is, IPv6 by its /64 (an IPv4-mapped one as
    IPv4); anything unreadable as is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _key(scope: Scope, value: str) -> str:
    if scope == Scope.USERNAME:
        value = value.strip().casefold()
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"login-throttle:{scope}:{digest}"


def _limits() -> dict[Scope, int]:
    return {
        Scope.USERNAME: settings.LOGIN_FAILURES_PER_USERNAME,
        Scope.ADDRESS: settings.LOGIN_FAILURES_PER_ADDRESS,
    }


def _keys(*, username: str, address: str) -> dict[Scope, str]:
    return {
        Scope.USERNAME: _key(Scope.USERNAME, username),
        Scope.ADDRESS: _key(Scope.ADDRESS, throttled_address(address)),
    }


def _state(keys: dict[Scope, str]) -> dict[Scope, tuple[int, float]]:
    """(failures, window start) of each scope."""
    found = cache.get_many([k for key in keys.values() for k in (key, f"{key}:since")])
    now = time.time()
    return {
        scope: (int(found.get(key) or 0), float(found.get(f"{key}:since") or now))
        for scope, key in keys.items()
    }


def _lockout(state: dict[Scope, tuple[int, float]]) -> Lockout | None:
    failures = {scope: count for scope, (count, _since) in state.items()}
    scope = lockout_decide(failures=failures, limits=_limits())
    if scope is None:
        return None
    window_s = settings.LOGIN_FAILURE_WINDOW_S
    retry = retry_after_s(since=state[scope][1], now=time.time(), window_s=window_s)
    return Lockout(scope, failures[scope], retry)


def _count(key: str) -> int:
    """One more on `key` (atomic: Redis INCR), its window started if it is new."""
    window = settings.LOGIN_FAILURE_WINDOW_S
    cache.add(f"{key}:since", time.time(), timeout=window)
    cache.add(key, 0, timeout=window)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        cache.set(key, 1, timeout=window)
        return 1


def _give_back(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:  # expired meanwhile: nothing to give back
        pass


@dataclass(frozen=True)
class Attempt:
    """A login attempt counted in advance: `counts` with it, per scope."""

    keys: dict[Scope, str]
    counts: dict[Scope, int]


def _audit(
    *, request: HttpRequest | None, event_type: EventType, username: str, detail: dict
) -> None:
    User = get_user_model()
    account = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
    audit_auth_event_record(
        request=request,
        event_type=event_type,
        username=username or "(empty)",
        account=account,
        succeeded=False,
        detail=detail,
    )


def login_attempt_begin(*, username: str, address: str) -> Attempt | Lockout | None:
    """Count the attempt before its password is checked: the Lockout that refuses it
    (its count given back), else the Attempt to end with login_failure_record or
    login_success_record. None: the cache is unreachable (nothing is throttled)."""
    try:
        keys = _keys(username=username, address=address)
        counts = {scope: _count(key) for scope, key in keys.items()}
        before = {scope: count - 1 for scope, count in counts.items()}
        scope = lockout_decide(failures=before, limits=_limits())
        if scope is None:
            return Attempt(keys, counts)
        for key in keys.values():
            _give_back(key)
        since = _state(keys)[scope][1]
    except RedisError:
        logger.exception("login throttle: the cache is unreachable; not throttling")
        return None
    window_s = settings.LOGIN_FAILURE_WINDOW_S
    return Lockout(
        scope, before[scope], retry_after_s(since=since, now=time.time(), window_s=window_s)
    )


def login_refused_record(*, request: HttpRequest | None, username: str, lockout: Lockout) -> None:
    _audit(
        request=request,
        event_type=EventType.AUTH_LOGIN_THROTTLED,
        username=username,
        detail={"scope": str(lockout.scope), "retry_after_s": lockout.retry_after_s},
    )


def login_failure_record(
    *, request: HttpRequest | None, username: str, attempt: Attempt
) -> Lockout | None:
    """The attempt failed (it is counted already): the lockout it started, if any
    (audited at the limit)."""
    try:
        lockout = _lockout(_state(attempt.keys))
    except RedisError:
        logger.exception("login throttle: the cache is unreachable; not throttling")
        return None
    for scope, limit in _limits().items():
        if limit > 0 and attempt.counts[scope] == limit:
            _audit(
                request=request,
                event_type=EventType.AUTH_LOGIN_LOCKED,
                username=username,
                detail={
                    "scope": str(scope),
                    "failures": attempt.counts[scope],
                    "window_s": settings.LOGIN_FAILURE_WINDOW_S,
                    "retry_after_s": lockout.retry_after_s if lockout else None,
                },
            )
    return lockout


def login_attempt_cancel(*, attempt: Attempt) -> None:
    """The attempt was not a failed password (an inactive account): its counts back."""
    try:
        for key in attempt.keys.values():
            _give_back(key)
    except RedisError:
        logger.exception("login throttle: the cache is unreachable")


def login_success_record(*, attempt: Attempt) -> None:
    """A successful login clears its user name's failures; its address's count is given
    back (the address's earlier failures stay)."""
    key = attempt.keys[Scope.USERNAME]
    try:
        cache.delete_many([key, f"{key}:since"])
        _give_back(attempt.keys[Scope.ADDRESS])
    except RedisError:
        logger.exception("login throttle: the cache is unreachable")
