"""The command-line client's own rules (no portal needed: parsing, exit codes, config,
what it prints), and the websocket handshake it authenticates with a token."""

from __future__ import annotations

import argparse
import os
import uuid
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from portalctl import render
from portalctl.cli import main, migration_options, parser_build, when
from portalctl.client import error_message
from portalctl.config import ConfigError, config_resolve

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("30m", "2026-12-07T11:30:00+00:00"),
        ("24h", "2026-12-06T12:00:00+00:00"),
        ("7d", "2026-11-30T12:00:00+00:00"),
        ("2w", "2026-11-23T12:00:00+00:00"),
        ("2026-12-01", "2026-12-01T00:00:00+00:00"),
        ("2026-12-01T08:30:00+01:00", "2026-12-01T08:30:00+01:00"),
    ],
)
def test_since_takes_a_date_or_an_age(text, expected):
    assert when(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7", "7y", "-1d", ""])
def test_since_refuses_what_it_cannot_read(text):
    with pytest.raises(argparse.ArgumentTypeError, match="ISO date"):
        when(text, now=NOW)


@pytest.mark.parametrize(
    "argv, exit_code",
    [
        (["migrate"], render.EXIT_USAGE),  # no VM, no --to
        (["migrate", "vm-1"], render.EXIT_USAGE),
        (["migrate", "vm-1", "--to", "h", "--live", "--offline"], render.EXIT_USAGE),
        (["migrate", "vm-1", "--to", "h", "--bandwidth", "fast"], render.EXIT_USAGE),
        (["evacuate", "h", "--bandwidth", "fast"], render.EXIT_USAGE),
        (["report", "--since", "last week"], render.EXIT_USAGE),
        (["frobnicate"], render.EXIT_USAGE),
        ([], render.EXIT_USAGE),
    ],
)
def test_a_wrong_command_line_exits_64_not_argparses_2(argv, exit_code, capsys):
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == exit_code
    assert "error:" in capsys.readouterr().err


def test_options_given_are_sent_and_the_rest_left_to_the_portal():
    args = parser_build().parse_args(
        ["migrate", "vm", "--to", "h", "--offline", "--bandwidth", "10", "--postcopy",
         "--policy", "postcopy_when_stalled", "--timeout", "600"]
    )  # fmt: skip
    assert migration_options(args) == {
        "live": False,
        "bandwidth_mib_s": 10,
        "allow_postcopy": True,
        "convergence_policy": "postcopy_when_stalled",
        "timeout_s": 600,
    }
    bare = parser_build().parse_args(["migrate", "vm", "--to", "h"])
    assert migration_options(bare) == {}  # `live` left out: the portal decides by the VM's state


@pytest.mark.parametrize(
    "status, expected",
    [
        (400, render.EXIT_USAGE),
        (401, render.EXIT_NO_PERMISSION),
        (403, render.EXIT_NO_PERMISSION),
        (404, render.EXIT_FAILED),
        (409, render.EXIT_FAILED),
        (502, render.EXIT_UNAVAILABLE),
    ],
)
def test_error_answers_map_to_exit_codes(status, expected):
    assert render.exit_code_for_api_status(status) == expected


def test_final_states_map_to_the_documented_exit_codes():
    assert render.MIGRATION_FINAL == {
        "succeeded": 0, "failed": 1, "cancelled": 2, "needs_attention": 3,
    }  # fmt: skip
    assert render.BATCH_FINAL["partially_failed"] == render.EXIT_FAILED


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"detail": "The migration already ended."}, "The migration already ended."),
        ({"remote_host": ["This field is required."]}, "remote_host: This field is required."),
        ({"non_field_errors": ["Host outside the networks."]}, "Host outside the networks."),
        ({"options": {"max_downtime_ms": ["Too small."]}}, "options: max_downtime_ms: Too small."),
        ({"items": [{}, {"vm": ["Unknown VM."]}]}, "items: vm: Unknown VM."),
    ],
)
def test_error_bodies_read_as_one_line(body, expected):
    assert error_message(body) == expected


def _write(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


def test_config_flag_beats_environment_beats_file(tmp_path):
    file = _write(tmp_path / "c.toml", 'url = "http://file:1"\ntoken = "file-token"\n')
    env = {"PORTALCTL_URL": "http://env:2/"}
    config = config_resolve(url=None, token=None, config_file=file, environ=env)
    assert (config.url, config.token) == ("http://env:2", "file-token")
    config = config_resolve(url="https://flag", token="t", config_file=file, environ=env)
    assert (config.url, config.token) == ("https://flag", "t")


def test_a_config_file_others_can_read_is_refused(tmp_path):
    file = _write(tmp_path / "c.toml", 'url = "http://x"\ntoken = "secret"\n', mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        config_resolve(url=None, token=None, config_file=file, environ={})


@pytest.mark.parametrize(
    "text, error",
    [
        ('url = "http://x"\n', "no token"),
        ('token = "t"\n', "no portal URL"),
        ('url = "ftp://x"\ntoken = "t"\n', "http:// or https://"),
        ('url = "http://x"\ntoken = "t"\npassword = "p"\n', "unknown keys password"),
        ("url = \n", "c.toml"),
    ],
)
def test_config_errors_say_what_to_do(tmp_path, text, error):
    file = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=error):
        config_resolve(url=None, token=None, config_file=file, environ={})


def test_without_config_the_exit_code_is_78(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("PORTALCTL_URL", raising=False)
    monkeypatch.delenv("PORTALCTL_TOKEN", raising=False)
    assert main(["hosts"]) == render.EXIT_CONFIG
    assert "PORTALCTL_URL" in capsys.readouterr().err


def test_a_portal_that_does_not_answer_exits_69(capsys):
    # Port 9 on the test's own loopback address: refused at once.
    assert main(["--url", "http://127.0.0.1:9", "--token", "t", "hosts"]) == 69
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def _migration(**fields) -> dict:
    base = {
        "id": 7, "vm_name": "web-1", "source": "lab-1", "destination": "lab-2",
        "status": "migrating", "percent": 62.4, "phase": "copying memory",
        "data_total_bytes": 512 * 2**20, "data_processed_bytes": 320 * 2**20,
        "throughput_bytes_s": 40 * 2**20, "memory_iteration": 2, "eta_s": 5,
        "convergence_note": "", "error": "", "failure_reason": "",
    }  # fmt: skip
    return base | fields


def test_progress_line_says_what_the_progress_view_says():
    line = render.migration_line(_migration())
    assert line.startswith("#7 web-1 lab-1 -> lab-2: migrating  [###############")
    for part in ("62 %", "copying memory", "320.0 MiB of 512.0 MiB", "40.0 MiB/s", "pass 2",
                 "ETA 5 s"):  # fmt: skip
        assert part in line
    stalled = render.migration_line(
        _migration(eta_s=None, convergence_note="not converging: the guest changes 16 MiB/s")
    )
    assert "ETA" not in stalled and stalled.endswith("the guest changes 16 MiB/s")
    failed = render.migration_line(
        _migration(status="failed", failure_reason="timeout", error="took over 600 s")
    )
    assert failed == "#7 web-1 lab-1 -> lab-2: failed (timeout: took over 600 s)"


def test_table_aligns_columns():
    assert render.table([(1, "lab-1"), (10, "b")], ("ID", "NAME")).splitlines() == [
        "ID  NAME",
        "1   lab-1",
        "10  b",
    ]


# The websocket handshake a script makes: a token in the Authorization header.


@pytest.fixture
def followed(db, admin_user):
    from hosts.models import Host
    from migrations_app.models import Migration

    source = Host.objects.create(name="src", address="192.0.2.20")
    destination = Host.objects.create(name="dst", address="192.0.2.21")
    return Migration.objects.create(
        vm_uuid=uuid.uuid4(), vm_name="web-1", source=source, destination=destination,
        requested_by=admin_user, requested_by_name=admin_user.username, status="migrating",
        claim_epoch=1, max_downtime_ms=500, timeout_s=600,
    )  # fmt: skip


def _handshake(migration_id: int, authorization: str | None) -> tuple[bool, object]:
    from migrations_app.consumers import CLOSE_UNAUTHENTICATED  # noqa: F401
    from portal.routing import websocket_urlpatterns
    from portal.ws_auth import TokenOrSessionAuthMiddleware

    headers = [(b"authorization", authorization.encode())] if authorization else []
    communicator = WebsocketCommunicator(
        TokenOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns)),
        f"/ws/migrations/{migration_id}/",
        headers=headers,
    )

    async def run():
        connected, code = await communicator.connect()
        first = await communicator.receive_json_from() if connected else code
        await communicator.disconnect()
        return connected, first

    return async_to_sync(run)()


@pytest.mark.django_db(transaction=True)
def test_a_token_opens_the_progress_socket_and_a_revoked_one_does_not(followed, admin_user):
    from audit.services import Actor
    from migrations_app.consumers import CLOSE_UNAUTHENTICATED
    from portal.authentication import tokens_forget
    from tokens.services import token_create, token_revoke

    token, raw = token_create(user=admin_user, name="ci", actor=Actor.system())
    connected, first = _handshake(followed.pk, f"Bearer {raw}")
    assert connected and first["event"] == "snapshot"
    assert first["migration"]["id"] == followed.pk

    token_revoke(token=token, actor=Actor.system())
    tokens_forget()
    assert _handshake(followed.pk, f"Bearer {raw}") == (False, CLOSE_UNAUTHENTICATED)
    assert _handshake(followed.pk, "Bearer mig_nothing.wrong") == (False, CLOSE_UNAUTHENTICATED)
    assert _handshake(followed.pk, None) == (False, CLOSE_UNAUTHENTICATED)
