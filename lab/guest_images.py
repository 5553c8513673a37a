"""Guest boot images for the lab, built from Debian packages and cached across lab roots.

* kernel: the Debian cloud kernel, resolved through ``linux-image-cloud-amd64``'s Depends;
* initramfs: static busybox plus an ``/init`` that fills guest RAM and keeps dirtying it
  (sizes from the kernel command line, so one initramfs serves every guest).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.layout import file_lock

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
MARKER_BOOTED = "LAB-GUEST userspace"
MARKER_FILLED = "LAB-GUEST filled"
# What a guest kernel prints when it crashes (docs/reliability.md, "The lab guest's crashes").
CRASH_SIGNS = ("Oops:", "BUG:", "Kernel panic")

INIT_SCRIPT = (Path(__file__).resolve().with_name("files") / "guest-init.sh").read_text()


class GuestImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class GuestImages:
    kernel: Path
    initrd: Path


def kernel_cmdline(fill_mib: int, dirty_mib_s: int) -> str:
    # quiet + mitigations=off: the guest runs under TCG, every saved cycle counts.
    # oops=panic + panic=-1: a kernel that crashed reboots at once (and fills its RAM
    # again) instead of running on half dead, its memory writer stopped.
    return (
        f"console=ttyS0 quiet oops=panic panic=-1 mitigations=off "
        f"labfill={int(fill_mib)} labdirty={int(dirty_mib_s)}"
    )


def ensure_guest_images(cache: Path) -> GuestImages:
    cache.mkdir(parents=True, exist_ok=True)
    # Two processes (a test run and the demo) may build the cache at the same time.
    with file_lock(cache / ".lock"):
        return GuestImages(kernel=_ensure_kernel(cache), initrd=_ensure_initramfs(cache))


def _ensure_kernel(cache: Path) -> Path:
    existing = sorted(cache.glob("vmlinuz-*"))
    if existing:
        # Any cached kernel will do: no apt round trip on a warm cache.
        return existing[-1]
    with tempfile.TemporaryDirectory(dir=cache, prefix="kernel-build-") as tmp:
        work = Path(tmp)
        # apt's _apt sandbox user must be able to write here, else apt warns.
        work.chmod(0o755)
        meta_deb = _apt_download(KERNEL_METAPACKAGE, work)
        real_package = _real_kernel_package(meta_deb)
        real_deb = _apt_download(real_package, work)
        kernel = _extract_vmlinuz(real_deb, work / "root")
        target = cache / kernel.name
        shutil.copyfile(kernel, target.with_suffix(".part"))
        os.replace(target.with_suffix(".part"), target)
        return target


def _apt_download(package: str, directory: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["apt-get", "download", "-q", package],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=600,
        )

    result = attempt()
    if result.returncode != 0:
        # Package lists may be missing or stale (fresh machine): refresh once.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        result = attempt()
    if result.returncode != 0:
        raise GuestImageError(
            f"apt-get download {package} failed: {result.stderr.strip() or result.stdout}"
        )
    debs = sorted(directory.glob(f"{package}_*.deb"))
    if not debs:
        raise GuestImageError(f"apt-get download {package} produced no .deb in {directory}")
    return debs[-1]


def _real_kernel_package(meta_deb: Path) -> str:
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(meta_deb), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\b(linux-image-\d[\w.+-]*-cloud-amd64)\b", depends)
    if not match:
        raise GuestImageError(
            f"{KERNEL_METAPACKAGE} does not depend on a versioned kernel: {depends!r}"
        )
    return match.group(1)


def _extract_vmlinuz(deb: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    # Equivalent of `dpkg -x`, but only ./boot: the modules are ~100 MB we don't need.
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        ["tar", "-x", "-C", str(into), "--wildcards", "./boot/vmlinuz-*"],
        stdin=fsys.stdout,
        capture_output=True,
        text=True,
    )
    assert fsys.stdout is not None
    fsys.stdout.close()
    fsys.wait()
    if fsys.returncode != 0 or tar.returncode != 0:
        raise GuestImageError(f"extracting the kernel from {deb.name} failed: {tar.stderr}")
    kernels = sorted((into / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise GuestImageError(f"{deb.name} has no boot/vmlinuz-*")
    return kernels[-1]


def _ensure_initramfs(cache: Path) -> Path:
    if not BUSYBOX.exists():
        raise GuestImageError(f"{BUSYBOX} missing: install the Debian package busybox-static")
    busybox = BUSYBOX.read_bytes()
    if _has_elf_interpreter(busybox):
        # The dynamic busybox would need libc inside the initramfs.
        raise GuestImageError(f"{BUSYBOX} is not static: install busybox-static")
    digest = hashlib.sha256(busybox + INIT_SCRIPT.encode()).hexdigest()[:16]
    target = cache / f"initrd-lab-{digest}.cpio.gz"
    if target.exists():
        return target
    data = build_initramfs(busybox, INIT_SCRIPT)
    part = target.with_suffix(".part")
    part.write_bytes(data)
    os.replace(part, target)
    return target


def _has_elf_interpreter(elf: bytes) -> bool:
    """True for a dynamically linked ELF64 little-endian binary (has PT_INTERP)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise GuestImageError(f"{BUSYBOX} is not a 64-bit ELF binary")
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize = int.from_bytes(elf[0x36:0x38], "little")
    phnum = int.from_bytes(elf[0x38:0x3A], "little")
    for index in range(phnum):
        start = phoff + index * phentsize
        if int.from_bytes(elf[start : start + 4], "little") == 3:  # PT_INTERP
            return True
    return False


def build_initramfs(busybox: bytes, init_script: str) -> bytes:
    """A gzip'ed newc cpio archive, written directly (no root needed for /dev/console)."""
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "tmp", "fill"):
        archive.add(directory, 0o040755)
    # The kernel opens /dev/console for init's stdio before /init runs.
    archive.add("dev/console", 0o020600, rdev=(5, 1))
    archive.add("bin/busybox", 0o100755, busybox)
    archive.add("init", 0o100755, init_script.encode())
    raw = archive.finish()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw)
    return out.getvalue()


class _Cpio:
    """Minimal writer of the 'newc' cpio format the kernel unpacks."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [
            self._ino,
            mode,
            0,  # uid
            0,  # gid
            2 if mode & 0o040000 else 1,  # nlink
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check
        ]
        self._ino += 1
        self._buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self._buf.write(encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        self._pad()
        return self._buf.getvalue()
