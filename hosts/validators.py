"""Field validators shared by the model, the API and the admin."""

import ipaddress
import re

from django.core.exceptions import ValidationError

from hosts.networks import address_refusal

# Characters that would change the meaning of a libvirt URI built from the field.
URI_BREAKING = set("/?#@;") | {" ", "\t", "\n", "\r"}
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def validate_uri_safe(value: str) -> None:
    bad = sorted({ch for ch in value if ch in URI_BREAKING or ch.isspace()})
    if bad:
        shown = ", ".join("space" if ch.isspace() else f"'{ch}'" for ch in bad)
        raise ValidationError(
            f"Must not contain {shown}: it would break the libvirt connection URI.",
            code="uri_breaking",
        )


def validate_host_address(value: str) -> None:
    """A hostname (RFC 1123) or an IPv4/IPv6 address, inside PORTAL_HOST_NETWORKS."""
    validate_uri_safe(value)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _validate_hostname(value)
    refusal = address_refusal(value)
    if refusal:
        raise ValidationError(refusal, code="address_not_allowed")


def _validate_hostname(value: str) -> None:
    hostname = value.rstrip(".")
    labels = hostname.split(".")
    if (
        not hostname
        or len(hostname) > 253
        or not all(_HOSTNAME_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # "10.0.0.300" is a broken IP, not a hostname
    ):
        raise ValidationError(
            f"'{value}' is not a valid hostname or IP address.", code="invalid_address"
        )
