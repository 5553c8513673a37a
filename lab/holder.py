"""The per-host "holder": first process of a lab host's private mount namespace.

It mounts the host's folders, hides the portal's, reaps as a subreaper (this machine's
PID 1 does not), and starts the daemons asked for on its 0600 FIFO as its children, so a
restarted libvirtd lands beside the QEMUs it re-attaches to. Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
CHILD_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}


def main(spec_path: str) -> int:
    with open(spec_path) as handle:
        spec = json.load(handle)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("holder: cannot become a subreaper", file=sys.stderr)
    for source, target in spec["mounts"]:
        subprocess.run(["mount", "--bind", source, target], check=True)
    _hide(spec.get("hide", []), spec.get("keep", []))
    for argv in spec.get("setup", []):
        # e.g. the FUSE view of the shared folder; its daemon forks and, being an
        # orphan, becomes our child.
        subprocess.run(argv, check=True)

    fifo = spec["fifo"]
    if os.path.exists(fifo):
        os.unlink(fifo)
    os.mkfifo(fifo, 0o600)
    # O_RDWR: we are our own writer, so the FIFO never reports EOF between clients.
    control = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    # The pid file is the readiness signal: mounts are in place once it exists.
    tmp = spec["pid_file"] + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(tmp, spec["pid_file"])

    pending = b""
    started: dict[str, int | None] = {}  # command name -> pid of the last one started
    while True:
        ready, _, _ = select.select([control, wake_r], [], [], 5.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if control in ready:
            try:
                pending += os.read(control, 4096)
            except BlockingIOError:
                pass
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = line.decode(errors="replace").strip()
                if request.startswith("restart "):
                    _restart(spec_path, request.removeprefix("restart ").strip(), started)
                else:
                    started[request] = _start(spec_path, request)
        _reap()


def _hide(hidden: list[str], kept: list[list[str]]) -> None:
    # Handles on the kept folders taken before the tmpfs covers them: a bind mount from
    # /proc/<pid>/fd/<n> reaches a folder that no path leads to any more.
    handles = [(target, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path, target in kept]
    for path in hidden:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "lab-hidden", path], check=True
        )
    for path, handle in handles:
        os.makedirs(path, exist_ok=True)
        subprocess.run(
            ["mount", "--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{handle}", path],
            check=True,
            pass_fds=(handle,),
        )
        os.close(handle)


def _restart(spec_path: str, name: str, started: dict[str, int | None]) -> None:
    """Stop the command's process (SIGTERM, SIGKILL after 15 s) and start it again."""
    pid = started.get(name)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid = None
    deadline = time.monotonic() + 15.0
    while pid is not None:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60.0
        time.sleep(0.05)
    started[name] = _start(spec_path, name)


def _start(spec_path: str, name: str) -> int | None:
    with open(spec_path) as handle:
        # Re-read: lab.host_setup rewrites the spec (e.g. new arguments) between requests.
        commands = json.load(handle)["commands"]
    command = commands.get(name)
    if command is None:
        print(f"holder: unknown command {name!r}", file=sys.stderr, flush=True)
        return None
    log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.fork()
        if pid == 0:  # child: own session, stdio to its log, then exec
            try:
                os.setsid()
                os.dup2(devnull, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                os.execve(command["argv"][0], command["argv"], CHILD_ENV)
            finally:
                os._exit(127)
        print(f"holder: started {name} pid {pid}", file=sys.stderr, flush=True)
        return pid
    finally:
        os.close(log)
        os.close(devnull)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
