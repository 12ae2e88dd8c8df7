"""While Ray runs, zsclip's records alone reach stdout: Ray prints forwarded worker lines, raylet events and
tracebacks to the process's stdout and stderr (from Python and from C++ alike), so file descriptors 1 and 2 are
pointed at a pipe that a thread reads through RayNoise onto the real stderr, one line per event."""

from __future__ import annotations

import contextlib
import os
import re
import sys

_CONTAINED: tuple | None = None


_CHATTER = re.compile(
    r"Token authentication is enabled|Progress bars disabled|has constructor arguments in the object store|"
    r"Started a local Ray instance|View the dashboard|Usage stats collection|^\s*$|\bINFO\b|\bDEBUG\b|"
    r"Full logs are in|To see full logs|Execution plan of Dataset|Starting execution of Dataset|execution finished|"
    r"execution failed|Exception occurred in Ray Data or Ray Core internal code|Full stack trace:"
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RayNoise:
    """Ray's own output, one line per event: an event line that a traceback explains is said alone, a bare
    traceback (and the chain of exceptions it may hold) by its first exception, a block of forwarded worker or
    raylet lines by its first line; repeats of one message (numbers aside) are said once, and Ray's progress
    chatter goes."""

    def __init__(self) -> None:
        self.traceback = ""  # "": not in one; "head": explained by a line said already; "bare": not yet said
        self.block: str | None = None  # the prefix of the forwarded block being read, "(raylet)" etc.
        self.said: set[str] = set()

    def feed(self, line: str) -> str | None:
        line = _ANSI.sub("", line).rstrip()
        at = line.find("Traceback (most recent call last)")
        if self.traceback:
            chained = line.startswith(("During handling", "The above exception")) or at == 0
            if not line or line[:1].isspace() or chained:
                return None
            if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line):  # an exception of the chain
                if self.traceback == "bare":
                    self.traceback = "head"
                    return self._once(line)
                return None
            self.traceback = ""
        if at >= 0:  # a traceback, alone or after the event it explains ("Task ... failed. Error: Traceback ...")
            head = re.sub(r"\s*(Error:)?\s*$", "", line[:at])
            said = self.feed(head) if head.strip() else None
            self.traceback = "head" if head.strip() else "bare"
            return said
        if _CHATTER.search(line) or line[:1].isspace():  # chatter, or the indented rest of a message
            return None
        prefix = re.match(r"^\((raylet|pid=[^)]*|[^)]*pid=[^)]*)\)", line)
        if prefix:
            if self.block == prefix.group(0):
                return None
            self.block = prefix.group(0)
            line = line[len(self.block) :].strip()
        else:
            self.block = None
        line = re.sub(r"^\[?[0-9-]+ [0-9:,]+\]?\s*(\w+ )?[\w.]+:\d+ -- ", "", line)  # Ray's log-line head
        return self._once(line)

    def _once(self, line: str) -> str | None:
        key = re.sub(r"[0-9a-f]{8,}|\d+", "#", line)
        if key in self.said:
            return None
        self.said.add(key)
        line = " ".join(line.split())
        if len(line) > 160:  # Ray's event lines run on (ids, addresses, advice): the first sentence says what
            line = line[: line.find(". ", 60) + 1] if line.find(". ", 60) > 0 else line[:300]
        return f"ray: {line}"


def contain_output():
    """Keep everything but zsclip's own records off stdout while Ray runs, process-wide and once: Ray prints
    forwarded worker lines, raylet events and tracebacks to the process's stdout and stderr (Python and C++
    alike). File descriptors 1 and 2 are pointed at a pipe that a thread reads through RayNoise onto the real
    stderr; zsclip keeps private copies of the real stdout (for records) and stderr (for its own messages).
    Returns (records, messages) text streams, or None where stdout is not the process's own (a test runner)."""
    global _CONTAINED
    if _CONTAINED is not None:
        return _CONTAINED
    try:
        if (sys.stdout.fileno(), sys.stderr.fileno()) != (1, 2):
            return None
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
    import atexit
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    out = sys.stdout
    records = os.fdopen(
        os.dup(1), "w", encoding=out.encoding, errors=out.errors, buffering=1 if out.line_buffering else -1
    )
    messages = os.fdopen(os.dup(2), "w", encoding=sys.stderr.encoding, errors="backslashreplace", buffering=1)
    read, write = os.pipe()
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)
    noise = RayNoise()

    def pump() -> None:
        with os.fdopen(read, "r", encoding="utf-8", errors="replace") as pipe:
            log = os.environ.get("ZSCLIP_RAY_LOG")  # everything Ray printed, unfiltered, for a bug report
            raw = open(log, "a", encoding="utf-8", errors="replace") if log else None  # noqa: SIM115
            for line in pipe:
                if raw:
                    raw.write(line)
                    raw.flush()
                said = noise.feed(line)
                if said is not None:
                    messages.write(said + "\n")
                    messages.flush()

    thread = threading.Thread(target=pump, name="zsclip-ray-output", daemon=True)
    thread.start()

    def drain() -> None:  # at exit, after Ray has shut down: what is in the pipe still gets its line
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
            os.close(1)
            os.close(2)
        thread.join(timeout=2)
        with contextlib.suppress(OSError, ValueError):
            records.flush()
            messages.flush()

    atexit.register(drain)
    _CONTAINED = (records, messages)
    return _CONTAINED
