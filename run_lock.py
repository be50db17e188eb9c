"""One owner per run folder: RunLock, the lock file beside a run's checkpoint folder
(checkpoints/<exp>.lock, runs.RunPaths.lock_file), which a second run of the same experiment
finds and is refused by (RunBusy), and which a dead owner's successor takes over. Works on a shared
filesystem (sweep.py over a cluster): created with an atomic link (O_EXCL is not atomic on old NFS),
judged by pid only where the pid means something (the same host, boot and PID namespace), else by
its heartbeat. Imports no TensorFlow. docs/safety.md#run-folders; docs/scale.md for clusters.

    with RunLock(paths.lock_file(exp), f"experiment {exp}") as lock:
        ...                       # lock.took_over: why a stale lock was taken over ('' if none)
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from util import UserError


LOCK_HEARTBEAT_SECONDS = 60   # the owner touches its lock file this often
LOCK_STALE_SECONDS = 600      # a lock of ANOTHER host untouched this long is stale (owner gone)


class RunBusy(UserError):
    """The run folder is owned by another live run."""


def process_start(pid: int) -> str:
    """When process `pid` started (Linux: field 22 of /proc/<pid>/stat, clock ticks since boot),
    to tell a live owner from a new process that reuses its pid; '' where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def pid_space() -> str:
    """Which pids this process sees: the kernel's boot id and this process's PID namespace. Two
    processes with the same pid_space can check each other's pid (one machine, one boot, one
    container's namespace); '' where /proc cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class RunLock:
    """One owner per run folder: a lock file created with os.link (atomic, and safe on NFS, where
    flock is not) holding the owner's host, pid, process start and start time.

    A lock already there is BUSY while its owner lives: on this host, while its pid runs (the same
    process, not a reused pid); from another host, while the owner keeps touching the file (every
    LOCK_HEARTBEAT_SECONDS, from a thread). It is STALE, and taken over with a log line, when its
    owner died (killed, crashed, machine rebooted): a dead pid on this host, or no touch from
    another host for LOCK_STALE_SECONDS. Released (deleted) by its owner when the run ends.
    "This host" means the same host name AND the same pid space (pid_space: boot id + PID
    namespace), so on a filesystem shared by several machines (a Ray cluster, sweep.py) a pid is
    only ever checked on the machine, boot and container that wrote it: two nodes that share a
    host name, or a rebooted node, fall under the heartbeat rule. A lock written before pid_space
    was recorded is judged by its host name alone.
    `took_over` says whose stale lock was taken (also passed to `log`)."""

    def __init__(self, path, what: str = "", log=None):
        self.path, self.what, self.log = Path(path), what or Path(path).stem, log
        self.took_over = ""
        self.token = uuid.uuid4().hex
        self.owner = {"host": socket.gethostname(), "pid_space": pid_space(), "pid": os.getpid(),
                      "process_start": process_start(os.getpid()),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "token": self.token}
        self._stop = threading.Event()
        self._heartbeat = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._link():
                self._heartbeat = threading.Thread(target=self._touch, daemon=True,
                                                   name=f"lock {self.path.name}")
                self._heartbeat.start()
                return self
            held = self.holder()
            if held is None and not self.path.exists():
                continue  # released meanwhile
            reason = self.stale(held)
            if reason is None:
                raise RunBusy(self.busy_message(held))
            self._take_over(held, reason)
        raise RunBusy(f"{self.path}: cannot take this lock (other runs keep taking it)")

    def release(self) -> None:
        self._stop.set()
        if (self.holder() or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def holder(self) -> dict | None:
        """The lock file's owner record; None when there is none or it is unreadable."""
        try:
            held = json.loads(self.path.read_text())
            return held if isinstance(held, dict) else None
        except (OSError, ValueError):
            return None

    def stale(self, held: dict | None) -> str | None:
        """Why the lock's owner is gone, or None while it may be alive."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return None
        if self.elsewhere(held) or not isinstance(held.get("pid"), int):
            return f"not touched for {age:.0f} s" if age > LOCK_STALE_SECONDS else None
        pid = held["pid"]
        if not pid_alive(pid):
            return f"pid {pid} is not running"
        started = process_start(pid)
        if started and held.get("process_start") and started != held["process_start"]:
            return f"pid {pid} is another process now"
        return None

    def elsewhere(self, held: dict | None) -> bool:
        """The lock was written where this process cannot check its pid (another host, boot or
        PID namespace), or cannot be read."""
        if held is None or held.get("host") != self.owner["host"]:
            return True
        space = held.get("pid_space")
        return bool(space and self.owner["pid_space"] and space != self.owner["pid_space"])

    def busy_message(self, held: dict | None) -> str:
        if held is None:
            return (f"{self.path}: {self.what} is locked by an unreadable lock file, touched less "
                    f"than {LOCK_STALE_SECONDS} s ago; if no run of it is alive, delete this file")
        return (f"{self.path}: {self.what} is being run by pid {held.get('pid')} on "
                f"{held.get('host')} since {held.get('started')}; wait for it to end (or, if no "
                "such run is alive, delete this file)")

    def _link(self) -> bool:
        """Create the lock file complete and atomically: a private file, then a link to it."""
        tmp = self.path.with_name(f".{self.path.name}.{self.token}.tmp")
        tmp.write_text(json.dumps(self.owner))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # NFS may report an error for a link it made: the link count tells
            return tmp.stat().st_nlink == 2
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, held: dict | None, reason: str) -> None:
        """Remove a stale lock, unless another run replaced it meanwhile (then it is put back)."""
        aside = self.path.with_name(f".{self.path.name}.{self.token}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if moved == held:
            self.took_over = (f"{self.path}: taking over the lock of {self.what} from pid "
                              f"{(held or {}).get('pid')} on {(held or {}).get('host')} ({reason})")
            if self.log:
                self.log(self.took_over)
        else:
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def _touch(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_SECONDS):
            if (self.holder() or {}).get("token") != self.token:
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)


