#!/usr/bin/env bash
# Installs the Debian 12 packages the portal and its lab hosts need. Idempotent; needs root.
#   install-system.sh               development and tests: the portal, the lab, the browser
#   install-system.sh --production  a production node (docs/deploy.md): the portal's
#                                   runtime, nginx, PostgreSQL and Redis; no lab, no browser
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system.sh: must run as root (apt-get, users for libvirtd)" >&2
  exit 1
fi

PACKAGES=(
  # lab hypervisors: libvirtd + QEMU (see "The lab" in README.md)
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  # building libvirt-python against the system libvirt
  libvirt-dev pkg-config gcc python3-dev
  # per-host sshd, guest initramfs
  openssh-server openssh-client cpio busybox-static
  # FUSE view of the lab's shared folder that libvirt accepts as shared storage
  bindfs
  # lab fault injection: cut links between lab hosts (lab/faults.py)
  nftables
  # private redis for the default profile
  redis-server
  # headless browser for the end-to-end UI test (driven by Playwright), and a font
  chromium fonts-dejavu-core
  # the Chinese pages in the screenshots (Simplified Chinese, docs/ui.md Languages)
  fonts-wqy-microhei
  # msgfmt for compilemessages (the translations; scripts/setup.sh), xgettext for makemessages
  gettext
  # util-linux provides unshare; procps for pgrep
  util-linux procps make curl
  # TLS: a host makes its own private keys and certificate requests (hosts/access/tls_services.py)
  openssl
  # lab hosts: administrators who sudo (and the portal's sudo-only access)
  sudo
  # the HTTP load generator of the API benchmark (bench/api_bench.py, make bench-api)
  wrk
  # LDAP login: python-ldap's headers, and the slapd the tests start (tests/ldap_server.py)
  libldap2-dev libsasl2-dev slapd ldap-utils
)

if [ "${1:-}" = "--production" ]; then
  PACKAGES=(
    # the virtualenv, and building libvirt-python and python-ldap against the system's
    python3-venv python3-dev gcc pkg-config libvirt-dev libldap2-dev libsasl2-dev
    # libvirt's client (virsh for the administrator); ssh to hosts; TLS tools
    libvirt-clients openssh-client openssl ca-certificates curl
    # msgfmt: scripts/setup.sh compiles the translations
    gettext
    # reverse proxy, database, broker and cache (docs/deploy.md)
    nginx postgresql redis-server
  )
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--production]" >&2
  exit 2
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # slapd: no directory of its own and no daemon started; the tests start their own.
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Test-only JavaScript (axe-core for tests/test_browser_a11y.py): Debian's npm, unless a
# node with its own npm is installed already (its nodejs would conflict with Debian's npm).
if [ -z "${1:-}" ] && ! command -v npm >/dev/null; then
  echo "installing: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

if [ "${1:-}" = "--production" ]; then
  echo "system packages ready (production)"
  exit 0
fi

# libvirtd 9.0 resolves the default QEMU user before reading qemu.conf: it must exist.
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent group libvirt >/dev/null || groupadd --system libvirt
id libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home -g libvirt-qemu -G kvm -s /usr/sbin/nologin libvirt-qemu
echo "system packages ready"
