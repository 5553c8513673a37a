"""Languages (issue 23): every user-visible string is marked, every catalogue is complete,
and a request in Portuguese or Chinese gets its pages, scripts' catalogue and API errors
in that language while field names and enum values stay English. No lab, no browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import translation
from rest_framework.test import APIClient

from tests import i18n_scan
from tests.po_files import read_po
from tests.test_roles import _user, world  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ["pt_BR", "zh_Hans"]
DOMAINS = ["django", "djangojs"]
# What makemessages reads, as scripts/setup.sh and docs/ui.md (Languages) run it.
IGNORED = [".venv", "node_modules", "var", "var-*", "tests", "bench", "lab", "portalctl"]
IGNORED += ["test-artifacts", "deploy", "docs"]


@pytest.fixture(scope="module")
def compiled() -> None:
    """The .mo files, as scripts/setup.sh makes them (git keeps only the .po)."""
    call_command("compilemessages", ignore_patterns=[".venv", "node_modules", "var*"], verbosity=0)
    translation.trans_real._translations = {}  # read the fresh catalogues


# --- (a) nothing unmarked -------------------------------------------------------------


def test_no_template_or_script_has_an_unmarked_string():
    problems = i18n_scan.all_problems()
    assert problems == {}, "unmarked strings (mark them; tests/i18n_scan.py says how):\n" + (
        "\n".join(f"{name}: {found}" for name, found in problems.items())
    )


@pytest.mark.parametrize(
    "template, unmarked",
    [
        ("<p>Hello there</p>", ["Hello there"]),
        ('<input placeholder="name or UUID">', ["placeholder='name or UUID'"]),
        ('<button type="submit" value="Go">', ["value='Go'"]),
        ('<span title="Migration {{ n }} is">x</span>', ["title='Migration  is'", "x"]),
        (
            '{{ m.live|yesno:"live,offline" }}',
            ['|yesno:"live,offline" (write yesno:_("live,offline"))'],
        ),
        ("{% if a %}Refresh from {{ host }}{% endif %}", ["Refresh from"]),
    ],
)
def test_the_scan_finds_unmarked_template_text(template, unmarked):
    assert i18n_scan.template_problems(template) == unmarked


@pytest.mark.parametrize(
    "template",
    [
        '{% load i18n %}<p>{% translate "Hello there" %}</p>',
        "<p>{% blocktranslate with n=x %}Migration {{ n }} is done{% endblocktranslate %}</p>",
        '<input placeholder="{% translate "name or UUID" %}">',
        "{# a comment with words #}<!-- and here -->",
        "<script>const words = 'not scanned here';</script>",
        "<td>{{ vm.memory_mib }} MiB</td><td>{{ ms }} ms · {{ when }} UTC</td>",
        "<section data-live=\"{{ live|yesno:'true,false' }}\"></section>",
        '{{ m.live|yesno:_("live,offline") }}',
    ],
)
def test_the_scan_passes_marked_template_text(template):
    assert i18n_scan.template_problems(template) == []


def test_the_scan_finds_unmarked_script_strings():
    source = """
      const A = "Remote host field cannot be blank";
      button.textContent = "Start";
      el.title = "libvirt: " + reason;
      const ok = gettext("Checking…");
      const both = interpolate(gettext("The portal answered %s."), [status]);
      document.querySelector("[data-field='x'] .y");
      api("POST", "/api/hosts/" + id + "/refresh/");
      const words = "use strict";
      const key = "badge badge-" + status;
    """
    assert i18n_scan.script_problems(source) == [
        "Remote host field cannot be blank",
        "Start",
        "libvirt: ",
    ]


# --- (b) complete catalogues --------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("domain", DOMAINS)
def test_the_committed_catalogue_translates_every_message(locale, domain):
    entries = read_po(ROOT / "locale" / locale / "LC_MESSAGES" / f"{domain}.po")
    assert len(entries) > (300 if domain == "django" else 40)
    untranslated = [e.key for e in entries if not e.translated]
    fuzzy = [e.key for e in entries if "fuzzy" in e.flags]
    assert untranslated == [] and fuzzy == []


def test_makemessages_finds_no_message_the_catalogues_lack(tmp_path, monkeypatch):
    """makemessages over a copy of the code and its catalogues: every message it finds
    is translated (none new, none fuzzy), and none of the committed ones went stale.
    (A copy: makemessages writes next to the files it reads.)"""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "node_modules",
            "var",
            "var-*",
            "test-artifacts",
            "*.mo",
            "__pycache__",
            ".ruff_cache",
            ".pytest_cache",
            "*.egg-info",
        ),
    )
    copy = source / "locale"
    monkeypatch.chdir(source)
    with override_settings(LOCALE_PATHS=[copy]):
        for domain in DOMAINS:
            call_command(
                "makemessages",
                locale=LOCALES,
                domain=domain,
                ignore_patterns=IGNORED,
                add_location="file",
                no_obsolete=True,
                verbosity=0,
            )
    for locale in LOCALES:
        for domain in DOMAINS:
            committed = read_po(ROOT / "locale" / locale / "LC_MESSAGES" / f"{domain}.po")
            found = read_po(copy / locale / "LC_MESSAGES" / f"{domain}.po")
            missing = [e.key for e in found if not e.translated or "fuzzy" in e.flags]
            assert missing == [], f"{locale}/{domain}: run makemessages and translate {missing}"
            assert {e.key for e in found} == {e.key for e in committed}, (
                f"{locale}/{domain}: the catalogue is not what makemessages makes now"
            )


# --- the language of a request ----------------------------------------------------------


def test_the_languages_offered():
    assert [code for code, _ in settings.LANGUAGES] == ["en", "pt-br", "zh-hans"]
    assert "django.middleware.locale.LocaleMiddleware" in settings.MIDDLEWARE


@pytest.mark.django_db
def test_accept_language_gives_the_page_its_language(browser, compiled):
    english = browser.get("/migrations/")
    assert '<html lang="en">' in english.content.decode()
    assert "<h1>Migrations</h1>" in english.content.decode()

    page = browser.get("/migrations/", HTTP_ACCEPT_LANGUAGE="pt-BR,pt;q=0.9")
    html = page.content.decode()
    assert '<html lang="pt-br">' in html
    assert "<h1>Migrações</h1>" in html
    assert "Nenhuma migração corresponde." in html
    # The vocabulary the scripts get: labels translated, the values (keys) the API's.
    vocabulary = json.loads(
        html.split('id="portal-vocabulary" type="application/json">')[1].split("</script>")[0]
    )
    assert vocabulary["status_labels"]["succeeded"] == "Concluída com sucesso"
    assert vocabulary["final_statuses"] == ["succeeded", "failed", "cancelled"]

    chinese = browser.get("/migrations/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert '<html lang="zh-hans">' in chinese
    assert "<h1>迁移</h1>" in chinese


@pytest.mark.django_db
def test_the_switcher_is_remembered_across_pages(browser, compiled):
    answer = browser.post("/i18n/setlang/", {"language": "zh-hans", "next": "/migrations/"})
    assert answer.status_code == 302 and answer["Location"] == "/migrations/"
    assert browser.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    # The cookie beats the browser's Accept-Language, on every page.
    for url in ("/", "/migrations/", "/tokens/"):
        html = browser.get(url, HTTP_ACCEPT_LANGUAGE="pt-BR").content.decode()
        assert '<html lang="zh-hans">' in html, url
        assert 'value="zh-hans" lang="zh-hans" selected' in html, url


@pytest.mark.django_db
def test_the_login_page_has_the_switcher_too(compiled):
    html = Client().get("/login/", HTTP_ACCEPT_LANGUAGE="pt-BR").content.decode()
    assert 'id="language-switcher"' in html
    assert "Entrar" in html


@pytest.mark.django_db
def test_the_scripts_catalogue_follows_the_language(browser, compiled):
    catalogue = browser.get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="pt-BR").content.decode()
    assert "Verificando\\u2026" in catalogue or "Verificando…" in catalogue
    assert "O campo host remoto n" in catalogue
    english = browser.get("/jsi18n/").content.decode()
    assert "Verificando" not in english


@pytest.mark.django_db
def test_api_errors_follow_the_language_and_field_names_stay_english(api, vm, compiled):
    url = f"/api/vms/{vm.uuid}/migrate/"
    answer = api.post(
        url, {"remote_host": "dst", "user": "root"}, format="json", HTTP_ACCEPT_LANGUAGE="pt-BR"
    )
    assert answer.status_code == 400
    assert answer.json() == {"password": ["Os campos usuário e senha devem ser preenchidos juntos"]}

    answer = api.post(
        url,
        {"remote_host": "dst", "live": False, "storage": "copy"},
        format="json",
        HTTP_ACCEPT_LANGUAGE="zh-CN",
    )
    assert answer.status_code == 400
    assert answer.json()["storage"] == ["只有在线迁移才能复制磁盘。"]

    # DRF's own messages too, and the default stays English.
    answer = api.post(url, {}, format="json", HTTP_ACCEPT_LANGUAGE="pt-BR")
    assert answer.json() == {"remote_host": ["O campo host remoto não pode ficar em branco"]}
    answer = api.post(url, {"remote_host": "dst", "user": "root"}, format="json")
    assert answer.json() == {"password": ["Both user and password fields must be filled"]}


@pytest.mark.django_db
def test_api_enum_values_stay_english(api, vm, compiled):
    answer = api.get(f"/api/vms/{vm.uuid}/", HTTP_ACCEPT_LANGUAGE="pt-BR")
    assert answer.status_code == 200
    assert answer.json()["state"] == "running"


def test_pre_check_messages_are_in_the_active_language(compiled):
    from migrations_app.prechecks.rules import name_or_uuid_clash

    arguments = dict(
        destination="beta", target_name="web", by_uuid=None, by_name_uuid="other", vm_uuid="u"
    )
    assert name_or_uuid_clash(**arguments).message == "beta already has another domain named 'web'"
    with translation.override("pt-br"):
        assert name_or_uuid_clash(**arguments).message == "beta já tem outro domínio chamado 'web'"
    with translation.override("zh-hans"):
        assert name_or_uuid_clash(**arguments).message == "beta 上已有另一个名为 'web' 的域"


@pytest.mark.django_db
def test_a_refusal_names_the_page_button_in_the_request_language(world, compiled):  # noqa: F811
    """The fix a 403 names is the button as the person sees it, in their language."""
    client = APIClient()
    client.force_authenticate(_user("operator"))
    response = client.post(
        f"/api/vms/{world['vm']}/migrate/check/",
        {"remote_host": "127.0.0.250"},
        format="json",
        HTTP_ACCEPT_LANGUAGE="pt-BR",
    )
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail.startswith("remote_host: 127.0.0.250 não é um host registrado"), detail
    assert '"Adicionar host" no painel' in detail


def test_placement_reasons_are_in_the_active_language(compiled):
    from migrations_app.domain.placement import CpuVerdict, HostFacts, VMNeeds, placement_judge

    facts = HostFacts(
        host_id=1,
        name="a",
        reachable=True,
        memory_free_bytes=4 * 2**30,
        memory_total_bytes=8 * 2**30,
        maintenance=True,
    )
    needs = VMNeeds(uuid="u", name="web", memory_bytes=2**30, live=True)
    cpu = CpuVerdict(True, "ok")
    with translation.override("pt-br"):
        reasons = placement_judge(vm=needs, facts=facts, cpu=cpu).reasons
    assert reasons[0] == "em manutenção: não recebe novas VMs"
    assert "3.072 MiB livres de 8.192 MiB depois de receber a VM (1.024 MiB)" in reasons
    english = placement_judge(vm=needs, facts=facts, cpu=cpu).reasons
    assert "3,072 MiB free of 8,192 MiB after placing the VM (1,024 MiB)" in english


@pytest.mark.django_db
def test_dates_on_the_pages_follow_the_language(browser, compiled):
    from datetime import UTC, datetime

    from hosts.models import Host
    from migrations_app.models import Migration

    source = Host.objects.create(name="src", address="192.0.2.1")
    destination = Host.objects.create(name="dst", address="192.0.2.2")
    migration = Migration.objects.create(
        vm_uuid="c891b9fa-7ac7-4f64-909e-8b68c10b034e",
        vm_name="web",
        source=source,
        destination=destination,
        requested_by_name="admin",
        status="succeeded",
        max_downtime_ms=500,
        timeout_s=600,
    )
    Migration.objects.filter(pk=migration.pk).update(
        created_at=datetime(2026, 12, 8, 1, 54, 8, tzinfo=UTC)
    )
    cell = {
        "en": "2026-12-08 01:54:08",  # English keeps ISO 8601's order, as the API
        "pt-BR": "08/12/2026 01:54:08",
        "zh-CN": "2026年12月8日 01:54:08",
    }
    for language, shown in cell.items():
        html = browser.get("/migrations/", HTTP_ACCEPT_LANGUAGE=language).content.decode()
        assert f"<td>{shown}</td>" in html, (language, shown)
