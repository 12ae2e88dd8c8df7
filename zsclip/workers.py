"""Run per-batch work in worker processes (or threads) that one bad file can neither stall nor crash.

torch's DataLoader ends the whole run when one worker dies (a decoder segfault, the OOM killer) and has only a
per-batch timeout. Here every worker publishes which item it is on and since when. A worker that dies, or that
spends longer than the per-file limit on one item, is replaced; that item is handed back as failed, with the
reason, and the worker's tasks are redone without it. Results come back in task order.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

Mark = Callable[[int], None]
# fn(items, failed, mark) -> result. `failed` holds (item, reason) pairs the result must report; `mark(i)` is
# called before item i, so a stall or crash can be pinned on it.
TaskFn = Callable[[list, list[tuple[Any, str]], Mark], Any]

_FIELDS = 3  # per worker in the shared state: task number, item index, start time (0 = idle)
_MAX_LOSSES = 3  # a task whose worker keeps dying outside any item fails as a whole


@dataclass
class _Task:
    items: list
    failed: list[tuple[Any, str]] = field(default_factory=list)
    losses: int = 0


class _Error:
    """An exception inside the task function: a bug, raised again in the caller rather than hidden."""

    def __init__(self, text: str):
        self.text = text


def _publish(state, slot: int, seq: float, item: float, since: float) -> None:
    base = slot * _FIELDS
    state[base], state[base + 1], state[base + 2] = seq, item, since


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
    try:
        import torch

        torch.set_num_threads(1)  # as in DataLoader workers: no intra-op thread pool in a forked child
    except ImportError:
        pass

    def receive():
        while not tasks.poll(1.0):
            if os.getppid() != parent:  # where PR_SET_PDEATHSIG is missing
                return None
        return tasks.recv()

    _serve(fn, slot, state, receive, results.send)


def _serve(fn: TaskFn, slot: int, state, receive, send) -> None:
    while True:
        try:
            msg = receive()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, items, failed = msg

        def mark(i: int, seq=seq) -> None:
            _publish(state, slot, seq, i, time.monotonic())

        try:
            result = fn(items, failed, mark)
        except Exception:
            result = _Error(traceback.format_exc())
        _publish(state, slot, seq, -1, 0.0)
        try:
            send((seq, result))
        except Exception:  # e.g. a result that cannot be pickled: the caller gets the reason, not a hang
            send((seq, _Error(traceback.format_exc())))


class _ProcessWorker:
    def __init__(self, ctx, fn: TaskFn, slot: int, state):
        self.slot, self.state, self.assigned, self.broken = slot, state, deque(), False
        tasks_recv, self._tasks = ctx.Pipe(duplex=False)
        self.results, results_send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=_process_main, args=(fn, slot, state, tasks_recv, results_send, os.getpid()), daemon=True
        )
        self.process.start()
        # Only the child may hold the write end, so its death reads as end-of-file here.
        results_send.close()
        tasks_recv.close()

    def send(self, msg) -> None:
        self._tasks.send(msg)

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
            with contextlib.suppress(OSError):
                self._tasks.send(None)
        self.process.join(timeout=None if kill else 2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        for conn in (self._tasks, self.results):
            conn.close()

    @staticmethod
    def collect(workers: list[_ProcessWorker], timeout: float) -> list[tuple[_ProcessWorker, int, Any]]:
        by_conn = {w.results: w for w in workers}
        out = []
        for conn in wait(list(by_conn), timeout):
            w = by_conn[conn]
            try:
                seq, result = conn.recv()
            except (EOFError, OSError):  # the worker died; supervise() sees it
                continue
            except Exception:  # a result that cannot be rebuilt (shared memory gone): redo that worker's tasks
                w.broken = True
                continue
            out.append((w, seq, result))
        return out


class _ThreadWorker:
    """The same contract in a daemon thread (for the GPU path's file reads); a stalled one is abandoned."""

    def __init__(self, fn: TaskFn, slot: int, state, results: queue.Queue):
        self.slot, self.state, self.assigned, self.broken = slot, state, deque(), False
        self._tasks: queue.Queue = queue.Queue()
        self._results = results
        self.thread = threading.Thread(
            target=_serve, args=(fn, slot, state, self._tasks.get, lambda r: results.put((self, *r))), daemon=True
        )
        self.thread.start()

    def send(self, msg) -> None:
        self._tasks.put(msg)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def death(self) -> str:
        return "reader thread ended"

    def stop(self, kill: bool = False) -> None:
        self._tasks.put(None)  # a stalled thread cannot be killed; it is left behind as a daemon

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
            self.state = [0.0] * (_FIELDS * workers)
            self._results: queue.Queue = queue.Queue()
        else:
            self.ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self.state = self.ctx.Array("d", _FIELDS * workers, lock=False)
        self.workers: list = []

    def _spawn(self, slot: int):
        _publish(self.state, slot, -1, -1, 0.0)
        if self.threads:
            return _ThreadWorker(self.fn, slot, self.state, self._results)
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
                w.stop()

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
            base = slot * _FIELDS
            seq, item, since = int(self.state[base]), int(self.state[base + 1]), self.state[base + 2]
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
