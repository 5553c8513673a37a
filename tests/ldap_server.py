"""A real OpenLDAP slapd for the tests (Debian's package), on a loopback address, with
a directory of its own: people under ou=people, role groups (groupOfNames) under
ou=groups. Started and stopped by the `ldap_server` fixture (tests/test_ldap.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
SUFFIX = "dc=portal,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "ldap-admin-pass"
ADDRESS = "127.0.0.40"

PEOPLE = {
    # uid: (password, groups)
    "olivia": ("olivia-pass-1", ["operators"]),
    "hank": ("hank-pass-1", ["host-admins", "operators"]),
    "ana": ("ana-pass-1", ["auditors"]),
    "nobody": ("nobody-pass-1", []),
    # Roles on one host group only (PORTAL_LDAP_HOST_GROUP_ROLES).
    "tara": ("tara-pass-1", ["team-a-operators", "team-a-admins"]),
    "uma": ("uma-pass-1", ["team-a-operators"]),  # a groupOfNames needs a member left
}


@dataclass
class LdapServer:
    uri: str
    process: subprocess.Popen
    root: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: portal\no: portal",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for uid, (password, _groups) in PEOPLE.items():
        entries.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid.title()}\nsn: {uid.title()}\nmail: {uid}@portal.test\n"
            f"userPassword: {password}"
        )
    groups: dict[str, list[str]] = {}
    for uid, (_password, names) in PEOPLE.items():
        for name in names:
            groups.setdefault(name, []).append(f"uid={uid},ou=people,{SUFFIX}")
    for name, members in groups.items():
        lines = "\n".join(f"member: {dn}" for dn in members)
        entries.append(
            f"dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {name}\n{lines}"
        )
    return "\n\n".join(entries) + "\n"


def start(root: Path) -> LdapServer:
    if not Path(SLAPD).exists():
        raise RuntimeError(
            f"NO SLAPD: {SLAPD} is missing. Run scripts/install-system.sh (as root): the LDAP "
            "tests start Debian's OpenLDAP."
        )
    shutil.rmtree(root, ignore_errors=True)
    (root / "db").mkdir(parents=True)
    includes = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in SCHEMAS)
    config = root / "slapd.conf"
    config.write_text(
        f"{includes}\npidfile {root / 'slapd.pid'}\nmoduleload back_mdb\n"
        f'database mdb\nsuffix "{SUFFIX}"\nrootdn "{ADMIN_DN}"\nrootpw {ADMIN_PASSWORD}\n'
        f"directory {root / 'db'}\nmaxsize 10485760\n"
        "access to attrs=userPassword by anonymous auth by self write by * none\n"
        "access to * by users read by anonymous auth\n"
    )
    (root / "data.ldif").write_text(_ldif())
    subprocess.run(
        [SLAPADD, "-f", str(config), "-l", str(root / "data.ldif")],
        check=True,
        capture_output=True,
    )
    port = _free_port(ADDRESS)
    uri = f"ldap://{ADDRESS}:{port}"
    process = subprocess.Popen(
        [SLAPD, "-f", str(config), "-h", f"{uri}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=(root / "slapd.log").open("wb"),
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ADDRESS, port), timeout=0.5).close()
            return LdapServer(uri=uri, process=process, root=root)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"slapd did not start: {(root / 'slapd.log').read_text()[-2000:]}")
