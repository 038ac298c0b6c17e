"""What the JVM services we launch share (the Kafka broker, the Schema Registry):
Java found and checked, artifacts resolved by Maven from a pom (once per pom
version), a pid file guarded by a lock, a log, a start bounded in time and a stop
that escalates. Plain parameters only; no `streams` imports.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

POLL_INTERVAL_S = 0.25
LOG_TAIL_LINES = 20
KILL_WAIT_S = 10  # a SIGKILLed process is gone in well under this


class JvmError(RuntimeError):
    """A JVM service could not be resolved, started or stopped."""


@dataclass(frozen=True)
class JvmService:
    """One launched JVM: where its pid and log live, and how to tell it is ours."""

    name: str  # for messages: "Kafka", "the Schema Registry"
    root: Path
    pid_file: Path
    log_file: Path
    # A byte string in /proc/<pid>/cmdline (the main class or jar): guards against pid reuse.
    cmdline_marker: bytes
    error: type[JvmError] = JvmError


def find_java(min_major: int, purpose: str, error: type[JvmError] = JvmError) -> str:
    """The java of JAVA_HOME or PATH, checked to be at least `min_major`."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise error(f"Java {min_major}+ is needed for {purpose}: no java found (set JAVA_HOME or put java on PATH)")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise error(f"cannot read the Java version from `{java} -version`: {out.strip()!r}")
    # Java 8 and older report "1.8.0_x"; 9+ report the feature release first.
    major = int(match[2]) if match[1] == "1" and match[2] else int(match[1])
    if major < min_major:
        raise error(f"{purpose} needs Java {min_major}+, but {java} is Java {major} (set JAVA_HOME)")
    return java


def maven_resolve(
    pom: Path, dest: Path, repo: Path, goal: Sequence[str], timeout_s: int, what: str, error: type[JvmError] = JvmError
) -> Path:
    """Run `mvn <goal> -DoutputDirectory=<staging>` on `pom` once per pom version and
    swap the result into `dest`; `dest/.resolved` holds the pom's hash, so any pin
    change resolves again."""
    marker = dest / ".resolved"
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text().strip() == pom_hash:
        return dest
    mvn = shutil.which("mvn")
    if not mvn:
        raise error(f"Maven (mvn) is needed once to fetch {what} from Maven Central: put mvn on PATH")
    staging = dest.parent / f"{dest.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        f"-Dmaven.repo.local={repo.resolve()}",
        *goal,
        f"-DoutputDirectory={staging}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise error(f"Maven could not resolve {what} ({' '.join(cmd)}):\n{tail}")
    # Swap the whole dir: files of two versions side by side would mix on a class path.
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    marker.write_text(pom_hash + "\n")
    return dest


def alive(pid: int, cmdline_marker: bytes) -> bool:
    """Is `pid` a live process of ours? Reaps it first if it is our own exited child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Guards against pid reuse after a crash; also a zombie's cmdline is empty.
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.parent.exists() or cmdline_marker in cmdline.read_bytes()


def running_pid(svc: JvmService) -> int | None:
    """The service's pid from its pid file; a stale pid file is removed."""
    try:
        pid = int(svc.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        svc.pid_file.unlink(missing_ok=True)
        return None
    if alive(pid, svc.cmdline_marker):
        return pid
    svc.pid_file.unlink(missing_ok=True)
    return None


@contextmanager
def locked(root: Path) -> Iterator[None]:
    # Two concurrent `up`s would both launch a JVM and fight over the pid file.
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".launcher.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def log_excerpt(log_file: Path) -> str:
    """The log's first error lines and its last lines.

    A failed start ends in pages of shutdown chatter; the cause (a bind error, a bad
    config) is the first ERROR and its "Caused by" chain, long before the tail.
    """
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    tail = lines[-LOG_TAIL_LINES:]
    errors = [ln for ln in lines if " ERROR " in ln or " FATAL " in ln or ln.startswith("Caused by:")]
    if not errors:
        return "\n".join(tail)
    return "\n".join(["first errors:", *errors[: LOG_TAIL_LINES // 2], "last lines:", *tail])


def launch(svc: JvmService, cmd: Sequence[str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start `cmd` detached, its output in the log (the previous run's kept as .1), and record its pid."""
    if svc.log_file.exists():  # keep the previous run's log for post-mortems
        svc.log_file.replace(svc.log_file.with_suffix(svc.log_file.suffix + ".1"))
    with open(svc.log_file, "wb") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # outlives the CLI and its Ctrl-C
        )
    svc.pid_file.write_text(f"{proc.pid}\n")
    return proc


def wait_answering(
    svc: JvmService,
    answers: Callable[[], bool],
    where: str,
    proc: subprocess.Popen[bytes] | None,
    pid: int,
    timeout_s: float,
) -> None:
    """Return once `answers()`; raise if the process exits first or the deadline passes
    (then stop it: `up` leaves a service that answers, or none)."""
    deadline = time.monotonic() + timeout_s
    while not answers():
        exited = proc.poll() is not None if proc else not alive(pid, svc.cmdline_marker)
        if exited:
            svc.pid_file.unlink(missing_ok=True)
            raise svc.error(f"{svc.name} exited during startup; see {svc.log_file}:\n{log_excerpt(svc.log_file)}")
        if time.monotonic() >= deadline:
            tail = log_excerpt(svc.log_file)
            stop(svc, pid, timeout_s=30)
            raise svc.error(
                f"{svc.name} did not answer on {where} within {timeout_s:g}s; stopped it; see {svc.log_file}:\n{tail}"
            )
        time.sleep(POLL_INTERVAL_S)


def signal_pid(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # it may exit between our check and the kill
        os.kill(pid, sig)


def kill(svc: JvmService, pid: int) -> None:
    """SIGKILL and wait (bounded) until it is gone."""
    signal_pid(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while alive(pid, svc.cmdline_marker):
        if time.monotonic() >= deadline:
            raise svc.error(f"{svc.name} (pid {pid}) survived SIGKILL")
        time.sleep(POLL_INTERVAL_S)
    svc.pid_file.unlink(missing_ok=True)


def stop(svc: JvmService, pid: int, timeout_s: float) -> None:
    """SIGTERM (a clean shutdown), a bounded wait, then SIGKILL."""
    signal_pid(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid, svc.cmdline_marker) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    if alive(pid, svc.cmdline_marker):
        kill(svc, pid)
    svc.pid_file.unlink(missing_ok=True)


def down(svc: JvmService, timeout_s: float) -> bool:
    """Stop the service if it runs; False if it was not running."""
    with locked(svc.root):
        pid = running_pid(svc)
        if pid is None:
            return False
        stop(svc, pid, timeout_s)
        return True
