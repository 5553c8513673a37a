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


# The host key types OpenSSH offers (ssh -Q HostKeyAlgorithms, without certificates).
SSH_HOST_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def validate_ssh_host_key(value: str) -> None:
    """One pinned key, '<type> <base64>': it becomes a line of known_hosts, where a
    newline or a second key would pin what nobody checked."""
    if not value:
        return
    if any(ch in value for ch in "\r\n\x00"):
        raise ValidationError("One key on one line: no line breaks.", code="multiline")
    parts = value.split(" ")
    if len(parts) != 2:
        raise ValidationError("A host key is '<type> <base64>', nothing else.", code="format")
    key_type, body = parts
    if key_type not in SSH_HOST_KEY_TYPES:
        raise ValidationError(
            f"{key_type!r} is not a known ssh host key type "
            f"({', '.join(sorted(SSH_HOST_KEY_TYPES))}).",
            code="key_type",
        )
    if not _BASE64.match(body) or len(body) % 4:
        raise ValidationError("The key's body is not base64.", code="base64")
