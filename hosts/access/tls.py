"""The portal's small CA for libvirt's TLS transport: plain functions over PEM, no Django."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hosts.networks import AddressRefused, connect_checked

CA_NAME = "live-migration-portal CA"
CA_VALID_DAYS = 3650
CERT_VALID_DAYS = 365
# The portal's own client certificate is renewed when it has less than this left.
RENEW_BEFORE_DAYS = 30
HANDSHAKE_TIMEOUT_S = 5.0


class TlsError(Exception):
    """A CA, CSR or certificate problem; the message is safe to show (no secret)."""


class TlsRefused(TlsError):
    """The host's address is outside PORTAL_HOST_NETWORKS: it was not contacted."""


@dataclass(frozen=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    names: tuple[str, ...]

    def as_dict(self) -> dict:
        times = {"not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat()}
        return asdict(self) | {"serial": str(self.serial), **times, "names": list(self.names)}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a host or client signs and enciphers for TLS."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key, not_before, not_after, *, ca: bool
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(_key_usage(ca=ca), critical=True)
    )


def ca_create(*, name: str = CA_NAME, valid_days: int = CA_VALID_DAYS) -> CertificateAuthority:
    """A new CA in memory (tests use one as "another CA")."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        _builder(
            subject,
            subject,
            key.public_key(),
            now - dt.timedelta(minutes=5),
            now + dt.timedelta(days=valid_days),
            ca=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key=key, cert=cert)


def ca_from_pem(key_pem: bytes, cert_pem: str) -> CertificateAuthority:
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("the portal's CA key is not an EC key")
    return CertificateAuthority(key=key, cert=x509.load_pem_x509_certificate(cert_pem.encode()))


def ca_load(folder: Path) -> CertificateAuthority | None:
    key_path, cert_path = folder / "cakey.pem", folder / "cacert.pem"
    if not (key_path.exists() and cert_path.exists()):
        return None
    return ca_from_pem(key_path.read_bytes(), cert_path.read_text())


def _names(host_name: str, address: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        names.append(x509.DNSName(address))
    if host_name != address and x509.DNSName(host_name) not in names:
        names.append(x509.DNSName(host_name))
    return names


def certificate_issue(
    ca: CertificateAuthority,
    public_key,
    *,
    kind: str,
    host_name: str,
    address: str = "",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """A "server" or "client" certificate for `public_key`: CN the host's name, SAN its address."""
    if kind not in ("server", "client"):
        raise TlsError(f"unknown certificate kind {kind!r}")
    now = _now()
    not_before = not_before or now - dt.timedelta(minutes=5)
    not_after = not_after or now + dt.timedelta(days=CERT_VALID_DAYS)
    if not_before >= not_after:
        not_before = not_after - dt.timedelta(days=1)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name)])
    builder = (
        _builder(subject, ca.cert.subject, public_key, not_before, not_after, ca=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    names = _names(host_name, address or host_name)
    builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def csr_sign(
    ca: CertificateAuthority,
    csr_pem: str,
    *,
    kind: str,
    host_name: str,
    address: str,
    not_after: dt.datetime | None = None,
) -> str:
    """Sign a host's CSR: only its public key is taken, never the names it asks for."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise TlsError(f"the {kind} certificate request of {host_name} is not a CSR") from exc
    if not csr.is_signature_valid:
        raise TlsError(f"the {kind} certificate request of {host_name} has a bad signature")
    cert = certificate_issue(
        ca, csr.public_key(), kind=kind, host_name=host_name, address=address, not_after=not_after
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise TlsError("not a PEM certificate") from exc


def cert_info(pem: str) -> CertInfo:
    cert = load_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n.value) for n in san)
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
        names=names,
    )


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False
    return True


def cert_problem(
    pem: str, ca_cert: x509.Certificate, *, what: str, now: dt.datetime | None = None
) -> str | None:
    """Why `pem` would not work with this CA now, as a sentence starting with `what`, or None."""
    now = now or _now()
    cert = load_certificate(pem)
    if not issued_by(cert, ca_cert):
        issuer = cert.issuer.rfc4514_string()
        return f"{what} was not issued by the portal's CA (its issuer is {issuer})"
    if cert.not_valid_after_utc <= now:
        return f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > now:
        return f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return None


@dataclass(frozen=True)
class ClientFiles:
    """The portal's `pkipath` folder: cacert.pem, clientcert.pem, clientkey.pem (0600)."""

    folder: Path
    cert: x509.Certificate


def client_issue(ca: CertificateAuthority) -> tuple[str, bytes]:
    """The portal's client (certificate PEM, key PEM) towards libvirtd, signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate_issue(ca, key.public_key(), kind="client", host_name="live-migration-portal")
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


def client_current(
    cert_pem: str, ca: CertificateAuthority, *, now: dt.datetime | None = None
) -> bool:
    """Is the client certificate one of `ca`'s with more than RENEW_BEFORE_DAYS left?"""
    cert = load_certificate(cert_pem)
    left = cert.not_valid_after_utc - (now or _now())
    return left > dt.timedelta(days=RENEW_BEFORE_DAYS) and issued_by(cert, ca.cert)


def served_certificate(
    address: str,
    port: int,
    *,
    client: ClientFiles | None = None,
    timeout: float = HANDSHAKE_TIMEOUT_S,
) -> str:
    """The PEM a TLS server presents, unverified: `cert_problem` judges it in a sentence."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client is not None:
        context.load_cert_chain(client.folder / "clientcert.pem", client.folder / "clientkey.pem")
    try:
        # The allow-list, as for every connection; the address checked is the one used.
        with connect_checked(address, port, timeout=timeout) as sock:
            with context.wrap_socket(sock) as tls_sock:
                der = tls_sock.getpeercert(binary_form=True)
                with contextlib.suppress(OSError, ssl.SSLError):
                    tls_sock.unwrap()  # close_notify: a clean end in libvirtd's log
    except AddressRefused as exc:
        raise TlsRefused(str(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"no TLS answer from {address}:{port}: {exc}") from exc
    if not der:
        raise TlsError(f"{address}:{port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)
