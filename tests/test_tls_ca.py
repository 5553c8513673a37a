"""The portal's CA and certificate judgement (hosts/access/tls.py): pure, no host needed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hosts.access import tls
from hosts.access.peer_services import tls_peer_uri
from hosts.models import Host


def _csr(key=None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.example")]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def test_ca_survives_its_pem_round_trip_and_is_a_ca(tmp_path):
    first = tls.ca_create()
    again = tls.ca_from_pem(tls.key_pem(first.key), first.cert_pem)
    assert first.fingerprint == again.fingerprint
    assert again.key.private_numbers() == first.key.private_numbers()
    constraints = first.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    # A CA kept as files before it moved to the database is read back the same.
    assert tls.ca_load(tmp_path / "ca") is None
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "cakey.pem").write_bytes(tls.key_pem(first.key))
    (tmp_path / "ca" / "cacert.pem").write_text(first.cert_pem)
    assert tls.ca_load(tmp_path / "ca").fingerprint == first.fingerprint


def test_server_certificate_names_the_host_and_takes_only_the_csr_key(tmp_path):
    ca = tls.ca_create()
    key, csr = _csr()
    pem = tls.csr_sign(ca, csr, kind="server", host_name="hv1", address="192.0.2.7")
    cert = tls.load_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
    assert san.get_values_for_type(x509.DNSName) == ["hv1"]
    # The subject is the portal's record of the host, not what the CSR asked for.
    assert cert.subject.rfc4514_string() == "CN=hv1"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert tls.issued_by(cert, ca.cert)
    assert tls.cert_problem(pem, ca.cert, what="it") is None
    # openssl agrees that the chain holds.
    (tmp_path / "s.pem").write_text(pem)
    (tmp_path / "cacert.pem").write_text(ca.cert_pem)
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "cacert.pem"),
            str(tmp_path / "s.pem"),
        ],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr


def test_dns_address_and_client_usage(tmp_path):
    ca = tls.ca_create()
    pem = tls.csr_sign(ca, _csr()[1], kind="client", host_name="hv2", address="hv2.example.net")
    info = tls.cert_info(pem)
    assert info.names == ("hv2.example.net", "hv2")
    usage = tls.load_certificate(pem).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(usage.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert info.fingerprint.startswith("SHA256:") and len(info.fingerprint) == 7 + 95


def test_expired_and_other_ca_are_named(tmp_path):
    ca = tls.ca_create()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired = tls.csr_sign(
        ca, _csr()[1], kind="client", host_name="hv1", address="192.0.2.7", not_after=past
    )
    problem = tls.cert_problem(expired, ca.cert, what="the client certificate of hv1")
    assert problem is not None and "the client certificate of hv1 expired on" in problem

    other = tls.ca_create(name="Someone else's CA")
    foreign = tls.csr_sign(other, _csr()[1], kind="server", host_name="hv1", address="192.0.2.7")
    problem = tls.cert_problem(foreign, ca.cert, what="x")
    assert problem == "x was not issued by the portal's CA (its issuer is CN=Someone else's CA)"
    # A certificate valid later is not valid now.
    later = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    assert "expired" in tls.cert_problem(
        expired, ca.cert, what="x", now=later + dt.timedelta(days=1000)
    )
    assert tls.cert_problem(expired, ca.cert, what="x", now=past - dt.timedelta(hours=1)) is None


def test_a_bad_csr_is_refused(tmp_path):
    ca = tls.ca_create()
    with pytest.raises(tls.TlsError, match="is not a CSR"):
        tls.csr_sign(ca, "hello", kind="server", host_name="hv1", address="192.0.2.7")
    with pytest.raises(tls.TlsError, match="unknown certificate kind"):
        tls.csr_sign(ca, _csr()[1], kind="ca", host_name="hv1", address="192.0.2.7")


@pytest.mark.parametrize(
    ("days_left", "same_ca", "current"),
    [
        (365, True, True),
        (31, True, True),
        (29, True, False),
        (-1, True, False),
        (365, False, False),
    ],
)
def test_portal_client_certificate_is_renewed_when_due_or_of_another_ca(
    days_left, same_ca, current
):
    ca = tls.ca_create()
    cert_pem, key = tls.client_issue(ca)
    assert serialization.load_pem_private_key(key, password=None)
    assert tls.issued_by(tls.load_certificate(cert_pem), ca.cert)
    not_after = tls.load_certificate(cert_pem).not_valid_after_utc
    now = not_after - dt.timedelta(days=days_left)
    assert tls.client_current(cert_pem, ca if same_ca else tls.ca_create(), now=now) is current


def test_uris(settings, tmp_path):
    settings.TLS_CLIENT_DIR = tmp_path / "client"
    host = Host(name="hv1", address="192.0.2.7", transport="tls")
    expected = "qemu+tls://192.0.2.7/system?" + urlencode({"pkipath": str(tmp_path / "client")})
    assert host.connection_uri == expected
    # The source host connects with its own certificate: no pkipath of the portal's.
    assert tls_peer_uri(host) == "qemu+tls://192.0.2.7/system"
    assert tls_peer_uri(Host(name="v6", address="fd00::5", transport="tls", port=16600)) == (
        "qemu+tls://[fd00::5]:16600/system"
    )
    assert tls_peer_uri(Host(name="s", address="192.0.2.8", transport="ssh", port=2222)) == (
        "qemu+tls://192.0.2.8/system"
    )
