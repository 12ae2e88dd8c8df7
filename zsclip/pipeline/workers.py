"""Run per-batch work in worker processes (or threads) that one bad file can neither stall nor crash.

torch's DataLoader ends the whole run when one worker dies (a decoder segfault, the OOM killer) and has only a
per-batch timeout. Here every worker publishes which item it is on and since when. A worker that dies, or that
spends longer than the per-file limit on one item, is replaced; that item is handed back as failed, with the
reason, and the worker's tasks are redone without it. Results come back in task order.

Nothing here may wait on a worker without a time limit. The parent writes tasks into a worker's pipe without
blocking (a worker busy sending a large result reads no tasks until the parent has read that result; a parent
blocked on sending the next task would wait forever), and a reader thread left behind after a time-out keeps
nothing in common with its replacement: it has its own heartbeat and stops at its next item.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import queue
import selectors
import signal
import struct
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

Mark = Callable[[int], None]
# fn(items, failed, mark) -> result. `failed` holds (item, reason) pairs the result must report; `mark(i)` is
# called before item i, so a stall or crash can be pinned on it.
TaskFn = Callable[[list, list[tuple[Any, str]], Mark], Any]

_FIELDS = 3  # per worker in the shared state: task number, item index, start time (0 = idle)
_MAX_LOSSES = 3  # a task whose worker keeps dying outside any item fails as a whole
_LENGTH = struct.Struct("!Q")  # frames a task message in a worker's task pipe


@dataclass
class _Task:
    items: list
    failed: list[tuple[Any, str]] = field(default_factory=list)
    losses: int = 0


class _Error:
    """An exception inside the task function: a bug, raised again in the caller rather than hidden."""

    def __init__(self, text: str):
        self.text = text


class _Abandoned(BaseException):
    """Raised in a reader thread that has been replaced, at its next item: its work is being redone elsewhere.
    A BaseException, so that a task function's `except Exception` cannot keep it going."""


def _publish(state, slot: int, seq: float, item: float, since: float) -> None:
    # `since` is cleared first and set last: a reader that sees the same `since` before and after reading
    # seq and item (see _heartbeat) has not mixed two items' values.
    base = slot * _FIELDS
    state[base + 2] = 0.0
    state[base], state[base + 1], state[base + 2] = seq, item, since


def _heartbeat(state, slot: int) -> tuple[int, int, float]:
    """(task number, item index, since) as published; since is 0 when idle or when caught mid-update."""
    base = slot * _FIELDS
    since = state[base + 2]
    seq, item = int(state[base]), int(state[base + 1])
    return seq, item, since if state[base + 2] == since else 0.0


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the parent dies (even by kill -9), instead of orphaning it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_IN_WORKER = False


def in_worker_process() -> bool:
    """True inside a worker process of run_tasks: results cross to the parent by pickling."""
    return _IN_WORKER


def _process_main(fn: TaskFn, slot: int, state, tasks, results, parent: int) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch = sys.modules.get("torch")  # forked from a process that uses it; never imported here (seconds)
    if torch is not None:
        torch.set_num_threads(1)  # as in DataLoader workers: no intra-op thread pool in a forked child

    def read(n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            if not wait([tasks], 1.0):
                if os.getppid() != parent:  # where PR_SET_PDEATHSIG is missing
                    return None
                continue
            chunk = os.read(tasks.fileno(), n - len(data))
            if not chunk:  # the parent closed the pipe
                return None
            data += chunk
        return bytes(data)

    def receive():
        header = read(_LENGTH.size)
        body = header and read(_LENGTH.unpack(header)[0])
        return pickle.loads(body) if body else None

    _serve(fn, slot, state, receive, results.send)


def _serve(fn: TaskFn, slot: int, state, receive, send, abandoned: Callable[[], bool] = bool) -> None:
    while True:
        try:
            msg = receive()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, items, failed = msg

        def mark(i: int | None, seq=seq) -> None:
            if abandoned():
                raise _Abandoned
            # None: busy, but not on an item (setting up): nothing to time
            _publish(state, slot, seq, -1 if i is None else i, 0.0 if i is None else time.monotonic())

        try:
            result = fn(items, failed, mark)
        except _Abandoned:
            return
        except Exception:
            result = _Error(traceback.format_exc())
        _publish(state, slot, seq, -1, 0.0)
        try:
            try:
                send((seq, result))
            except (EOFError, OSError):
                raise
            except Exception:  # e.g. a result that cannot be pickled: the caller gets the reason, not a hang
                send((seq, _Error(traceback.format_exc())))
        except (EOFError, OSError):  # the parent has gone or stopped reading: nothing left to do
            return


class _Outbox:
    """The parent's end of a worker's task pipe, written only as far as the pipe takes without blocking; the
    rest waits here until the worker reads (the supervisor's loop watches for that). Frames are a length and a
    pickle, read by _process_main from the raw descriptor."""

    def __init__(self, conn):
        self.conn, self.fd, self._queue = conn, conn.fileno(), deque()
        os.set_blocking(self.fd, False)

    def put(self, msg) -> None:
        body = ForkingPickler.dumps(msg)
        self._queue.extend((memoryview(_LENGTH.pack(len(body))), memoryview(body)))
        self.flush()

    def flush(self) -> None:
        while self._queue:
            try:
                n = os.write(self.fd, self._queue[0])
            except BlockingIOError:
                return
            except OSError:  # the worker has gone; supervise() sees it and redoes its tasks
                self._queue.clear()
                return
            if n == len(self._queue[0]):
                self._queue.popleft()
            else:
                self._queue[0] = self._queue[0][n:]

    def waiting(self) -> bool:
        return bool(self._queue)

    def close(self) -> None:
        self._queue.clear()
        self.conn.close()


class _ProcessWorker:
    def __init__(self, ctx, fn: TaskFn, slot: int, state):
        self.slot, self.state, self.assigned, self.broken = slot, state, deque(), False
        tasks_recv, tasks_send = ctx.Pipe(duplex=False)
        self.results, results_send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_process_main, args=(fn, slot, state, tasks_recv, results_send, os.getpid()), daemon=True
        )
        self.process.start()
        # Only the child may hold these ends, so its death reads as end-of-file or a broken pipe here.
        results_send.close()
        tasks_recv.close()
        self._outbox = _Outbox(tasks_send)

    def send(self, msg) -> None:
        self._outbox.put(msg)

    def heartbeat(self) -> tuple[int, int, float]:
        return _heartbeat(self.state, self.slot)

    def alive(self) -> bool:
        return self.process.is_alive()

    def death(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def stop(self, kill: bool = False) -> None:
        if kill and self.process.is_alive():
            self.process.kill()
        elif not kill:
            self._outbox.put(None)
        self.process.join(timeout=None if kill else 2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._outbox.close()
        self.results.close()

    @staticmethod
    def collect(workers: list[_ProcessWorker], timeout: float) -> list[tuple[_ProcessWorker, int, Any]]:
        """Results that have arrived, waiting up to `timeout` for one; meanwhile tasks flow into the pipes that
        have room, so a worker is never left waiting for the rest of a task."""
        out = []
        with selectors.DefaultSelector() as selector:
            for w in workers:
                selector.register(w.results, selectors.EVENT_READ, w)
                if w._outbox.waiting():
                    selector.register(w._outbox.fd, selectors.EVENT_WRITE, w)
            for key, events in selector.select(timeout):
                w = key.data
                if events & selectors.EVENT_WRITE:
                    w._outbox.flush()
                    continue
                try:
                    seq, result = w.results.recv()
                except (EOFError, OSError):  # the worker died; supervise() sees it
                    continue
                except Exception:  # a result that cannot be rebuilt (shared memory gone): redo that worker's tasks
                    w.broken = True
                    continue
                out.append((w, seq, result))
        return out


class _ThreadWorker:
    """The same contract in a daemon thread (for the GPU path's file reads). A stalled thread cannot be killed:
    it is abandoned, and stops at its next item. Its heartbeat is its own, never its replacement's, and its
    tasks are copies, so that nothing it does once awake can touch the work that replaced it."""

    def __init__(self, fn: TaskFn, results: queue.Queue):
        self.assigned, self.broken, self.abandoned = deque(), False, False
        self.state = [-1.0, -1.0, 0.0]
        self._tasks: queue.Queue = queue.Queue()
        self._results = results

        def receive():
            msg = self._tasks.get()
            return None if self.abandoned else msg

        def send(result) -> None:
            if not self.abandoned:
                results.put((self, *result))

        self.thread = threading.Thread(
            target=_serve, args=(fn, 0, self.state, receive, send, lambda: self.abandoned), daemon=True
        )
        self.thread.start()

    def send(self, msg) -> None:
        seq, items, failed = msg
        self._tasks.put((seq, list(items), list(failed)))  # the supervisor edits its own lists on a time-out

    def heartbeat(self) -> tuple[int, int, float]:
        return _heartbeat(self.state, 0)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def death(self) -> str:
        return "reader thread ended"

    def stop(self, kill: bool = False) -> None:
        self.abandoned = self.abandoned or kill
        self._tasks.put(None)

    @staticmethod
    def collect(workers: list[_ThreadWorker], timeout: float) -> list[tuple[_ThreadWorker, int, Any]]:
        if not workers:
            return []
        out = []
        try:
            out.append(workers[0]._results.get(timeout=timeout))
            while True:
                out.append(workers[0]._results.get_nowait())
        except queue.Empty:
            pass
        return out


def run_tasks(
    tasks: Iterable[list],
    fn: TaskFn,
    *,
    workers: int,
    item_timeout: float | None = None,
    threads: bool = False,
    prefetch: int = 2,
) -> Iterator[Any]:
    """fn(task) for every task, in order, on `workers` processes (or threads); see the module docstring.

    `item_timeout` (seconds, None for no limit) is the longest one item may take before its worker is replaced.
    """
    return _Supervisor(fn, workers, item_timeout, threads, prefetch).run(iter(tasks))


class _Supervisor:
    def __init__(self, fn: TaskFn, workers: int, item_timeout: float | None, threads: bool, prefetch: int):
        self.fn, self.n, self.item_timeout, self.threads, self.prefetch = fn, workers, item_timeout, threads, prefetch
        if threads:
            self._results: queue.Queue = queue.Queue()
        else:
            self.ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self.state = self.ctx.Array("d", _FIELDS * workers, lock=False)
        self.workers: list = []

    def _spawn(self, slot: int):
        if self.threads:
            return _ThreadWorker(self.fn, self._results)
        _publish(self.state, slot, -1, -1, 0.0)  # the worker it replaces is dead: no one else writes here
        return _ProcessWorker(self.ctx, self.fn, slot, self.state)

    def run(self, tasks: Iterator[list]) -> Iterator[Any]:
        self.workers = [self._spawn(slot) for slot in range(self.n)]
        pending: dict[int, _Task] = {}
        ready: dict[int, Any] = {}
        todo: deque[int] = deque()
        next_in = next_out = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.n * self.prefetch:
                    items = next(tasks, None)
                    if items is None:
                        exhausted = True
                        break
                    pending[next_in] = _Task(list(items))
                    todo.append(next_in)
                    next_in += 1
                self._assign(todo, pending)
                if next_out in ready:
                    result = ready.pop(next_out)
                    del pending[next_out]
                    next_out += 1
                    yield result
                    continue
                if exhausted and not pending:
                    return
                kind = _ThreadWorker if self.threads else _ProcessWorker
                for w, seq, result in kind.collect(self.workers, 0.1):
                    if w not in self.workers or seq not in w.assigned:
                        continue  # from a worker already replaced; its task was redone
                    if isinstance(result, _Error):
                        raise RuntimeError(f"a decoding worker failed:\n{result.text}")
                    w.assigned.remove(seq)
                    ready[seq] = result
                self._supervise(todo, pending)
        finally:
            for w in self.workers:
                w.stop(kill=bool(w.assigned))  # a worker still busy (the caller stopped early) has nothing to finish

    def _assign(self, todo: deque[int], pending: dict[int, _Task]) -> None:
        while todo:
            w = min(self.workers, key=lambda w: len(w.assigned))
            if len(w.assigned) >= self.prefetch:
                return
            seq = todo.popleft()
            task = pending[seq]
            w.assigned.append(seq)
            w.send((seq, task.items, task.failed))

    def _supervise(self, todo: deque[int], pending: dict[int, _Task]) -> None:
        now = time.monotonic()
        for slot, w in enumerate(self.workers):
            seq, item, since = w.heartbeat()
            if not w.alive():
                reason = f"the decoder crashed on this file (worker {w.death()})"
            elif self.item_timeout and since and now - since > self.item_timeout:
                reason = f"took longer than {self.item_timeout:g} s to read and decode (--file-timeout)"
            elif w.broken:
                reason = None  # a lost message, no file to blame: just redo
            else:
                continue
            w.stop(kill=True)
            lost = list(w.assigned)
            self.workers[slot] = self._spawn(slot)
            if not lost:
                continue
            task = pending.get(seq) if since and reason else None
            if task is not None and seq in lost and 0 <= item < len(task.items):
                task.failed.append((task.items.pop(item), reason))
            elif reason:
                first = pending[lost[0]]
                first.losses += 1
                if first.losses >= _MAX_LOSSES:
                    first.failed.extend((it, reason) for it in first.items)
                    first.items = []
            todo.extendleft(reversed(lost))
