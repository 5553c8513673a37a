"""The fix named the way the pages name it. Messages that tell a person what to do next
are read in the browser as often as by scripts, so they point at the button, never at
an API call; docs/api.md maps each button to its endpoint."""

from __future__ import annotations

from django.utils.text import format_lazy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, gettext_noop

from hosts.models import Host

# In the language of the request, with the buttons' own words (the same msgids as the
# pages' buttons, so the fix reads as the button the person sees).


def on_host_page(host: Host, button: str) -> str:
    """`button`: the button's English words (a msgid of its template)."""
    return _('"%(button)s" on the host page of %(host)s') % {"button": _(button), "host": host.name}


def ssh_access_set_up(host: Host) -> str:
    return _("%(action)s (a user and password, used once)") % {
        "action": on_host_page(host, gettext_noop("Set up ssh access"))
    }


def tls_issue(host: Host) -> str:
    return on_host_page(host, gettext_noop("Issue TLS certificates"))


def host_key_accept(host: Host) -> str:
    return _("%(action)s (after comparing its fingerprint)") % {
        "action": on_host_page(host, gettext_noop("Accept host key"))
    }


def host_retire(host: Host) -> str:
    return on_host_page(host, gettext_noop("Retire"))


# Lazy: made into text when a message is formatted, in that request's language.
HOST_ADD = format_lazy(gettext_lazy('"{button}" on the dashboard'), button=gettext_lazy("Add host"))
