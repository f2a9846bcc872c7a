"""Run several AION services as child processes: prefixed logs, health waits, clean shutdown.

Each service is one row of a table (`ServiceSpec`: name, argv, env, health URL, what it waits for).
The supervisor starts a row once the rows it waits for are ready, streams the child's output as
`[name] line` (a progress bar redrawn with carriage returns becomes one line: `ConsoleLines`), and
calls the stack up when every row is ready.

Policy (documented in docs/deploy.md):
- Ctrl-C or SIGTERM stops every child, in reverse start order: SIGTERM to the child's process
  group, SIGKILL to the group after the grace period (a second Ctrl-C skips the wait). Each child
  runs in its own process group, so nothing it started outlives it; on Linux a child also receives
  SIGTERM if the supervisor itself is killed (PR_SET_PDEATHSIG).
- A child that exits on its own, or a start that fails or times out, is reported loudly and stops
  the whole stack with exit status 1: a half-running stack would hide the failure. Run the stack
  under a service manager (systemd, compose) when restarts are wanted.
"""

from __future__ import annotations

import codecs
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

import httpx

# Execs the real command after asking the kernel to SIGTERM it when the supervisor dies; argv[1] is
# the supervisor's pid, so a child whose supervisor died while it was starting exits at once.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


# Query string of the supervisor's health probes: access-log lines that carry it are not shown.
PROBE_PARAMS = {"probe": "aion-up"}
PROBE_MARK = "probe=aion-up"


class ConsoleLines:
    """A child's raw output as whole lines, one line per progress bar.

    Progress bars (tqdm: "Loading weights", "Writing model shards") redraw one line with carriage
    returns. Prefixed and logged as they come, every redraw of a bar — and the next bar too, when a
    library clears its bar instead of ending it with a newline — ran together on one line. Here a bar
    becomes one line with its final state; a bar that runs longer than `every_s` also shows its state
    that often, so a long download or training run is not silent.
    """

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self._segment = ""  # text since the last \r or \n
        self._carry = ""  # a trailing \r: the start of a \r\n, or a redraw, as the next chunk will tell
        self._pending: str | None = None  # the current bar's latest state, not shown yet
        self._key: str | None = None  # which bar is being redrawn
        self._shown_at = 0.0
        self._redrawn = False  # the current line had a carriage return

    @staticmethod
    def _bar_key(segment: str) -> str:
        """What stays the same across redraws of one bar: the letters of its description."""
        return re.sub(r"[^A-Za-z]+", "", segment.split("|", 1)[0])

    def feed(self, text: str) -> list[str]:
        """The lines complete once `text` (the next piece of output) is added."""
        text = self._carry + text
        self._carry = ""
        if text.endswith("\r"):
            text, self._carry = text[:-1], "\r"
        out: list[str] = []
        for piece in re.split(r"(\r\n|\r|\n)", text):
            if piece in ("\r\n", "\n"):
                self._end_segment(out, newline=True)
            elif piece == "\r":
                self._end_segment(out, newline=False)
            else:
                self._segment += piece
        return out

    def close(self) -> list[str]:
        """Whatever is left when the output ends (a last line without a newline)."""
        out = self.feed("")
        if self._carry:
            self._carry = ""
            self._end_segment(out, newline=False)
        if self._segment or self._pending is not None:
            self._end_segment(out, newline=True)
        return out

    def _end_segment(self, out: list[str], *, newline: bool) -> None:
        segment, self._segment = self._segment, ""
        now = self.clock()
        if segment.strip():
            key = self._bar_key(segment)
            if key != self._key:
                if self._pending is not None:  # another bar (or text) replaced this one: it ended here
                    out.append(self._pending)
                self._key, self._shown_at = key, now
            self._pending = segment
            if not newline and now - self._shown_at >= self.every_s:
                out.append(segment)
                self._pending, self._shown_at = None, now
        elif newline and not self._redrawn and self._pending is None:
            out.append("")  # an empty line of the child's own
        if newline:
            if self._pending is not None:
                out.append(self._pending)
            self._pending, self._key, self._redrawn = None, None, False
        else:
            self._redrawn = True


class SupervisorError(Exception):
    """A service could not start, failed its health check, or exited; the stack was stopped."""


@dataclass(frozen=True)
class ServiceSpec:
    """One row of the table: how to start a service and how to tell it is ready."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    # Ready when GET answers 200 (and, if set, its JSON "status" equals ready_status).
    health_url: str | None = None
    ready_status: str | None = None
    # Started only once these services are ready (a oneshot is ready when it exited 0).
    after: Sequence[str] = ()
    # Runs to completion (migrations); exit 0 is success, anything else fails the stack.
    oneshot: bool = False
    # Without a health URL: ready once it has stayed up this long.
    settle_s: float = 2.0
    # Printed in the banner once the stack is up.
    url: str | None = None
    note: str = ""


class _Child:
    def __init__(self, spec: ServiceSpec, proc: subprocess.Popen[bytes], reader: threading.Thread) -> None:
        self.spec, self.proc, self.reader = spec, proc, reader
        self.started_at = time.monotonic()
        self.ready = False
        self.last_health: str = "not answering yet"
        self.next_probe = self.started_at

    @property
    def name(self) -> str:
        return self.spec.name


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Starts the table's services, waits for them, and stops them all; `run()` returns the exit status."""

    def __init__(self, specs: Sequence[ServiceSpec], *, out: TextIO | None = None, start_timeout: float = 900.0,
                 grace_s: float = 20.0, poll_s: float = 0.25, probe_every_s: float = 1.0,
                 color: bool | None = None) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate service names in {names}")
        for spec in specs:
            missing = [dep for dep in spec.after if dep not in names]
            if missing:
                raise ValueError(f"{spec.name} waits for unknown service(s) {missing}")
        self.specs = list(specs)
        self.out = out or sys.stdout
        self.start_timeout, self.grace_s, self.poll_s = start_timeout, grace_s, poll_s
        # Health probes show up in the services' access logs: once a second is enough.
        self.probe_every_s = probe_every_s
        self.color = (self.out.isatty() and "NO_COLOR" not in os.environ) if color is None else color
        self.width = max([len(n) for n in names] + [2])
        self._lock = threading.Lock()
        self._children: list[_Child] = []
        self._stop = threading.Event()
        self._force = False
        self._http = httpx.Client(timeout=2.0, trust_env=False)

    # ---- output --------------------------------------------------------------------------------

    _COLORS = ("36", "35", "33", "32", "34", "91", "96")

    def _prefix(self, name: str) -> str:
        label = f"[{name}]".ljust(self.width + 2)
        if not self.color:
            return label
        names = [s.name for s in self.specs]
        code = self._COLORS[names.index(name) % len(self._COLORS)] if name in names else "1"
        return f"\033[{code}m{label}\033[0m"

    def say(self, message: str, name: str = "up") -> None:
        """A line from the supervisor itself (or from a helper of it, such as the demo)."""
        self._write(name, message)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _write(self, name: str, line: str) -> None:
        with self._lock:
            try:
                self.out.write(f"{self._prefix(name)} {line}\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # our own stdout went away (closed pipe); the children still get stopped

    def _pump(self, name: str, stream: BinaryIO) -> None:
        lines = ConsoleLines()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # read1: whatever the child wrote so far, so a bar's carriage returns are seen as they come.
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            for line in lines.feed(decoder.decode(chunk)):
                self._show(name, line)
        for line in lines.feed(decoder.decode(b"", final=True)) + lines.close():
            self._show(name, line)
        stream.close()

    def _show(self, name: str, line: str) -> None:
        # A service's access log line for our own once-a-second probe is noise while it loads.
        if PROBE_MARK not in line:
            self._write(name, line)

    # ---- lifecycle -----------------------------------------------------------------------------

    def _spawn(self, spec: ServiceSpec) -> _Child:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        argv = list(spec.argv)
        if sys.platform.startswith("linux"):
            argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv]
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        reader = threading.Thread(target=self._pump, args=(spec.name, proc.stdout), daemon=True,
                                  name=f"log-{spec.name}")
        reader.start()
        child = _Child(spec, proc, reader)
        self._children.append(child)
        self.say(f"started {spec.name} (pid {proc.pid}): {' '.join(spec.argv)}")
        return child

    def _check_ready(self, child: _Child) -> None:
        """Sets child.ready; raises SupervisorError when the service reports a failure."""
        spec = child.spec
        now = time.monotonic()
        if spec.health_url is None:
            child.ready = now - child.started_at >= spec.settle_s
            return
        if now < child.next_probe:
            return
        child.next_probe = now + self.probe_every_s
        try:
            response = self._http.get(spec.health_url, params=PROBE_PARAMS)
        except httpx.HTTPError as exc:
            child.last_health = f"not answering ({type(exc).__name__})"
            return
        body = None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
        status = body.get("status") if isinstance(body, dict) else None
        if status == "error":
            detail = body.get("error") if isinstance(body, dict) else None
            raise SupervisorError(f"{spec.name} failed to start: {detail or body}")
        if response.status_code != 200:
            child.last_health = f"HTTP {response.status_code}"
            return
        if spec.ready_status is not None and status != spec.ready_status:
            child.last_health = f"status {status!r}"
            return
        child.ready = True

    def _ready(self, name: str) -> bool:
        return any(c.name == name and c.ready for c in self._children)

    def _start_all(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.specs)
        while not self._stop.is_set():
            for spec in [s for s in pending if all(self._ready(d) for d in s.after)]:
                pending.remove(spec)
                self._spawn(spec)
            for child in [c for c in self._children if not c.ready]:
                code = child.proc.poll()
                if code is not None:
                    if child.spec.oneshot and code == 0:
                        child.ready = True
                        self.say(f"{child.name} finished")
                        continue
                    raise SupervisorError(f"{child.name} {describe_exit(code)} before it was ready "
                                          f"(its last lines are above)")
                if not child.spec.oneshot:
                    self._check_ready(child)
                    if child.ready:
                        self.say(f"{child.name} is ready")
            if not pending and all(c.ready for c in self._children):
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(f"{c.name} ({c.last_health})" for c in self._children if not c.ready)
                raise SupervisorError(f"not ready after {self.start_timeout:.0f} s: {waiting or 'nothing started'}")
            self._stop.wait(self.poll_s)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            for child in self._children:
                if child.spec.oneshot:
                    continue
                code = child.proc.poll()
                if code is not None:
                    raise SupervisorError(f"{child.name} {describe_exit(code)} while the stack was running "
                                          f"(its last lines are above)")

    def _kill_group(self, child: _Child, sig: int) -> None:
        try:
            os.killpg(child.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """Stop every child in reverse start order; nothing in their process groups survives."""
        for child in reversed(self._children):
            if child.proc.poll() is None:
                self.say(f"stopping {child.name}")
                self._kill_group(child, signal.SIGTERM)
                deadline = time.monotonic() + self.grace_s
                while child.proc.poll() is None and time.monotonic() < deadline and not self._force:
                    time.sleep(0.05)
                if child.proc.poll() is None:
                    self.say(f"{child.name} did not stop in {self.grace_s:.0f} s; killing it")
            # Whatever is left in the group (the leader, or helpers it started) goes now.
            self._kill_group(child, signal.SIGKILL)
            child.proc.wait()
            child.reader.join(timeout=5)
        self._http.close()

    def request_stop(self, signum: int | None = None) -> None:
        if self._stop.is_set():
            self._force = True
            return
        self._stop.set()
        if signum is not None:
            self.say(f"{signal.Signals(signum).name} received: stopping (again to skip the grace period)")

    def run(self, on_ready: Callable[[Supervisor], None] | None = None) -> int:
        """Start, wait for readiness, supervise until a signal or a crash, stop. 0: stopped on request."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda signum, _frame: self.request_stop(signum))
        status = 0
        try:
            self._start_all()
            if not self._stop.is_set():
                self.banner()
                if on_ready:
                    on_ready(self)
                self._watch()
        except SupervisorError as exc:
            self._report(str(exc))
            status = 1
        except Exception as exc:  # a bug here must still stop the children
            self._report(f"supervisor error: {type(exc).__name__}: {exc}")
            status = 1
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.say("stopped" if status == 0 else "stopped after a failure")
        return status

    def _report(self, message: str) -> None:
        bar = "!" * 78
        for line in (bar, f"FAILED: {message}", "stopping the stack", bar):
            self.say(line)
        if self.out is not sys.stderr:
            try:
                sys.stderr.write(f"aion up: {message}\n")
            except (OSError, ValueError):
                pass

    def banner(self) -> None:
        self.say("all services are ready:")
        for child in self._children:
            if child.spec.oneshot:
                continue
            where = child.spec.url or f"pid {child.proc.pid}"
            note = f"  ({child.spec.note})" if child.spec.note else ""
            self.say(f"  {child.name.ljust(self.width)}  {where}{note}")
        self.say("Ctrl-C stops everything.")

    @property
    def children(self) -> list[subprocess.Popen[bytes]]:
        return [c.proc for c in self._children]
