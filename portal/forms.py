"""The login forms of the login page and the admin, throttled (portal.login_throttle)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from portal import login_throttle


class ThrottledLoginMixin:
    """Refuses a login while locked and counts failures; `lockout`: what locked this one."""

    lockout: login_throttle.Lockout | None = None

    def clean(self) -> dict[str, Any]:
        request = self.request  # type: ignore[attr-defined]
        username = str(self.cleaned_data.get("username") or "")  # type: ignore[attr-defined]
        address = login_throttle.client_address(request)
        # Counted before the password is checked: parallel attempts cannot all pass.
        attempt = login_throttle.login_attempt_begin(username=username, address=address)
        if isinstance(attempt, login_throttle.Lockout):
            self.lockout = attempt
            login_throttle.login_refused_record(request=request, username=username, lockout=attempt)
            raise forms.ValidationError(attempt.message, code="locked")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except forms.ValidationError as error:
            if attempt is None:
                raise
            if getattr(error, "code", None) != "invalid_login":
                login_throttle.login_attempt_cancel(attempt=attempt)
                raise
            lockout = login_throttle.login_failure_record(
                request=request, username=username, attempt=attempt
            )
            if lockout is not None:
                self.lockout = lockout
                raise forms.ValidationError(lockout.message, code="locked") from error
            raise
        if attempt is not None:
            login_throttle.login_success_record(attempt=attempt)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
