"""The tls pre-check and the TLS action's refusals, on the portal's record only (no host:
the hosts here are plain rows, not reached over tls)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hosts.access import tls, tls_services
from hosts.models import Host
from migrations_app.domain.options import MigrationOptions
from migrations_app.prechecks.facts import Facts, MigrationPlan, Unreachable, tls_problems
from migrations_app.prechecks.rules import CheckStatus, Verdict, tls_certificates

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tls_dir(settings, tmp_path):
    settings.TLS_CA_DIR = tmp_path / "ca"
    settings.TLS_CLIENT_DIR = tmp_path / "client"


def _give_certs(host: Host, ca=None, *, client_not_after=None) -> Host:
    ca = ca or tls_services.portal_ca()
    pems = {}
    for kind in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = tls.certificate_issue(
            ca,
            key.public_key(),
            kind=kind,
            host_name=host.name,
            address=host.address,
            not_after=client_not_after if kind == "client" else None,
        )
        pems[kind] = tls.cert_info(cert.public_bytes(serialization.Encoding.PEM).decode())
        pems[kind + "_pem"] = cert.public_bytes(serialization.Encoding.PEM).decode()
    host.tls_server_cert, host.tls_client_cert = pems["server_pem"], pems["client_pem"]
    host.tls_server_not_after = pems["server"].not_after
    host.tls_client_not_after = pems["client"].not_after
    host.save()
    return host


def _plan(src: Host, dst: Host, **options) -> MigrationPlan:
    return MigrationPlan(
        vm_uuid="00000000-0000-0000-0000-000000000001",
        vm_name="web-1",
        source=src,
        destination=dst,
        options=MigrationOptions(**options),
    )


def tls_check(plan: MigrationPlan) -> Verdict | None:
    problems = tls_problems(plan)
    if problems is None:
        return None
    nothing = Unreachable("not asked")
    return tls_certificates(Facts(plan, 5, None, problems, None, nothing, nothing, None))


@pytest.fixture
def hosts():
    return (
        Host.objects.create(name="hv1", address="192.0.2.10"),
        Host.objects.create(name="hv2", address="192.0.2.11"),
    )


def test_no_tls_no_check(hosts):
    assert tls_check(_plan(*hosts)) is None


def test_tls_needs_certificates_on_both_hosts(hosts):
    src, dst = hosts
    _give_certs(src)
    result = tls_check(_plan(src, dst, tls=True))
    assert result.status == CheckStatus.FAIL
    assert result.message == (
        "needed for the tls option: hv2 has no TLS certificates from the portal: set up ssh "
        'access, then "Issue TLS certificates" on the host page of hv2'
    )
    _give_certs(dst)
    result = tls_check(_plan(src, dst, tls=True))
    assert result.status == CheckStatus.PASS, result.message


def test_expired_and_foreign_certificates_are_named(hosts):
    src, dst = hosts
    _give_certs(src, client_not_after=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    _give_certs(dst, tls.ca_create(name="Other CA"))
    message = tls_check(_plan(src, dst, tls=True)).message
    assert "the TLS client certificate of hv1 expired on" in message
    assert "the TLS server certificate of hv1" not in message
    assert (
        "the TLS client certificate of hv2 was not issued by the portal's CA "
        "(its issuer is CN=Other CA)"
    ) in message
    assert '"Issue TLS certificates" on the host page of hv1' in message
    assert '"Issue TLS certificates" on the host page of hv2' in message


def test_tls_action_needs_ssh_access_first(api, hosts):
    response = api.post(f"/api/hosts/{hosts[0].pk}/tls/", {}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": [
            'hv1: set up ssh access first ("Set up ssh access" on the host page of hv1 (a user '
            "and password, used once)): the "
            "certificates are installed over the portal's ssh session"
        ]
    }


def test_tls_action_is_for_administrators(viewer_api, hosts):
    assert viewer_api.post(f"/api/hosts/{hosts[0].pk}/tls/", {}).status_code == 403


def test_tls_option_rules_answer_400_before_any_host_is_asked(api, vm):
    # (the vm fixture's hosts are not real: nothing may try to reach them)
    response = api.post(
        f"/api/vms/{vm.uuid}/migrate/", {"remote_host": "dst", "tls": True, "live": False}
    )
    assert response.status_code == 400
    assert list(response.json()) == ["tls"]
