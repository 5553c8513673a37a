import ipaddress

from django import forms
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"))
    write_enabled = forms.BooleanField(
        required=False, label=gettext_lazy("May change things (read-write)")
    )
    expires_at = forms.DateTimeField(
        required=False,
        label=gettext_lazy("Expires (UTC)"),
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    allowed_networks = forms.CharField(
        required=False,
        label=gettext_lazy("Only from these networks"),
        help_text=gettext_lazy("Comma-separated, e.g. 127.0.0.0/8; empty: from anywhere."),
    )

    def clean_expires_at(self):
        value = self.cleaned_data["expires_at"]
        if value is not None and value <= timezone.now():
            raise forms.ValidationError(_("Must be in the future."))
        return value

    def clean_allowed_networks(self) -> list[str]:
        networks = []
        given = self.cleaned_data["allowed_networks"].split(",")
        for text in filter(None, (t.strip() for t in given)):
            try:
                networks.append(str(ipaddress.ip_network(text, strict=False)))
            except ValueError as exc:
                raise forms.ValidationError(
                    _("%(text)s is not a network: %(error)s") % {"text": repr(text), "error": exc}
                ) from exc
        return networks
