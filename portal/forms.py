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
        lockout = login_throttle.login_lockout_find(username=username, address=address)
        if lockout is not None:
            self.lockout = lockout
            login_throttle.login_refused_record(request=request, username=username, lockout=lockout)
            raise forms.ValidationError(lockout.message, code="locked")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except forms.ValidationError as error:
            if getattr(error, "code", None) == "invalid_login":
                lockout = login_throttle.login_failure_record(
                    request=request, username=username, address=address
                )
                if lockout is not None:
                    self.lockout = lockout
                    raise forms.ValidationError(lockout.message, code="locked") from error
            raise
        login_throttle.login_success_record(username=username)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
