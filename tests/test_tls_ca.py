"""The portal's CA and certificate judgement (hosts/tls.py): pure, no host needed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hosts import tls
from hosts.models import Host, tls_peer_uri


def _csr(key=None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil.example")]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def test_ca_is_made_once_with_a_0600_key(tmp_path):
    first = tls.ca_ensure(tmp_path / "ca")
    again = tls.ca_ensure(tmp_path / "ca")
    assert first.fingerprint == again.fingerprint
    assert oct(os.stat(tmp_path / "ca" / "cakey.pem").st_mode & 0o777) == "0o600"
    constraints = first.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True


def test_server_certificate_names_the_host_and_takes_only_the_csr_key(tmp_path):
    ca = tls.ca_ensure(tmp_path / "ca")
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
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "ca" / "cacert.pem"),
            str(tmp_path / "s.pem"),
        ],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr


def test_dns_address_and_client_usage(tmp_path):
    ca = tls.ca_ensure(tmp_path / "ca")
    pem = tls.csr_sign(ca, _csr()[1], kind="client", host_name="hv2", address="hv2.example.net")
    info = tls.cert_info(pem)
    assert info.names == ("hv2.example.net", "hv2")
    usage = tls.load_certificate(pem).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(usage.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert info.fingerprint.startswith("SHA256:") and len(info.fingerprint) == 7 + 95


def test_expired_and_other_ca_are_named(tmp_path):
    ca = tls.ca_ensure(tmp_path / "ca")
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
    ca = tls.ca_ensure(tmp_path / "ca")
    with pytest.raises(tls.TlsError, match="is not a CSR"):
        tls.csr_sign(ca, "hello", kind="server", host_name="hv1", address="192.0.2.7")
    with pytest.raises(tls.TlsError, match="unknown certificate kind"):
        tls.csr_sign(ca, _csr()[1], kind="ca", host_name="hv1", address="192.0.2.7")


def test_portal_client_folder_is_kept_and_follows_the_ca(tmp_path):
    ca = tls.ca_ensure(tmp_path / "ca")
    first = tls.portal_client_ensure(tmp_path / "client", ca)
    assert sorted(p.name for p in (tmp_path / "client").iterdir()) == [
        "cacert.pem",
        "clientcert.pem",
        "clientkey.pem",
    ]
    assert oct(os.stat(tmp_path / "client" / "clientkey.pem").st_mode & 0o777) == "0o600"
    assert tls.portal_client_ensure(tmp_path / "client", ca).cert == first.cert
    other = tls.ca_create()
    renewed = tls.portal_client_ensure(tmp_path / "client", other)
    assert renewed.cert != first.cert
    assert tls.issued_by(renewed.cert, other.cert)
    assert (tmp_path / "client" / "cacert.pem").read_text() == other.cert_pem


def test_uris(settings, tmp_path):
    settings.TLS_CLIENT_DIR = tmp_path / "client"
    host = Host(name="hv1", address="192.0.2.7", transport="tls")
    expected = "qemu+tls://192.0.2.7/system?" + urlencode({"pkipath": str(tmp_path / "client")})
    assert host.connection_uri == expected
    # The source host connects with its own certificate: no pkipath of the portal's.
    assert tls_peer_uri(host) == "qemu+tls://192.0.2.7/system"
    assert Host(name="v6", address="fd00::5", transport="tls", port=16600).tls_peer_uri == (
        "qemu+tls://[fd00::5]:16600/system"
    )
    assert Host(name="s", address="192.0.2.8", transport="ssh", port=2222).tls_peer_uri == (
        "qemu+tls://192.0.2.8/system"
    )
