"""Continuous admission at call granularity: requests that arrive while the device is busy join the next
`Sampler.generate` call.

One worker thread owns the device and loops: take the waiting jobs, build ONE sampler call led by the
oldest job (plus every waiting job that may share its call, in arrival order, up to `max_batch` rows),
run it while holding `lock` (shareable with other users of the same sampler, e.g. the trainer's
rollouts), hand the rows back, repeat. A job that arrives during a call is considered for the very next
call, not queued behind the rest of a batch gathered earlier. Only when the device was idle does the
worker wait `window_s` for more arrivals before starting, so a burst shares its first call too.
The sampler runs whole `generate` calls: rows do not join a call already decoding.

Jobs that can share a call (the group key): the same `SamplingParams` (static in the compiled program),
the same power-of-two bucket of `max_new_tokens` (a 16-token request does not wait for a 1024-token
one), and, for seeded sampling, only the job itself: a seeded request runs alone so that the same seed
gives the same text whatever else is in flight. Greedy requests ignore the seed and batch freely.

At most `max_pending` jobs wait at a time; `submit` refuses more with `BatcherBusy` (the server answers
429) rather than letting the queue and the clients' latency grow without bound.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import random
import threading
import time
from typing import Any, Callable, Sequence

from skillsd_jax.sampling import Completion, SamplingParams

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no more work."""


class BatcherBusy(RuntimeError):
    """Too many jobs are waiting; the caller should retry later."""


@dataclasses.dataclass
class _Job:
    rows: list[list[int]]
    max_new_tokens: int
    sampling: SamplingParams
    seed: int | None
    future: concurrent.futures.Future
    key: tuple[Any, ...] = ()


def _new_tokens_bucket(n: int) -> int:
    return 1 << max(4, math.ceil(math.log2(max(n, 1))))


class Batcher:
    """Runs generation jobs from many threads as few sampler calls, one at a time."""

    def __init__(self, sampler: Any, params_fn: Callable[[], Any], *, max_batch: int = 8, window_s: float = 0.005,
                 lock: Any = None, max_pending: int = 256):
        if max_batch < 1 or window_s < 0 or max_pending < 1:
            raise ValueError(f"Batcher needs max_batch >= 1, window_s >= 0, max_pending >= 1; got {max_batch}, "
                             f"{window_s}, {max_pending}")
        self.sampler = sampler
        self.params_fn = params_fn
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.lock = lock if lock is not None else threading.Lock()
        self.max_pending = int(max_pending)
        self._pending: list[_Job] = []  # arrival order
        self._cond = threading.Condition()
        self._closed = False
        self._rng = random.Random()
        self._counts = {"jobs": 0, "rows": 0, "device_calls": 0, "shared_calls": 0, "max_rows_per_call": 0,
                        "errors": 0, "cancelled": 0, "rejected_busy": 0, "joined_while_busy": 0}
        self._busy = False  # a sampler call is running
        self._thread = threading.Thread(target=self._loop, name="serve-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    def submit(self, rows: Sequence[Sequence[int]], *, max_new_tokens: int, sampling: SamplingParams,
               seed: int | None = None) -> concurrent.futures.Future:
        """Queues one job; its future resolves to one `Completion` per row (at most `max_new_tokens` each)."""
        if not rows or max_new_tokens < 1:
            raise ValueError(f"a job needs rows and max_new_tokens >= 1, got {len(rows)} rows, {max_new_tokens}")
        job = _Job([list(r) for r in rows], int(max_new_tokens), sampling, seed, concurrent.futures.Future())
        seeded = seed is not None and not sampling.greedy
        job.key = (sampling, _new_tokens_bucket(max_new_tokens), ("seeded", id(job)) if seeded else None)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._pending) >= self.max_pending:
                self._counts["rejected_busy"] += 1
                raise BatcherBusy(f"{self.max_pending} requests are already waiting")
            self._counts["jobs"] += 1
            self._counts["rows"] += len(job.rows)
            self._counts["joined_while_busy"] += int(self._busy)
            self._pending.append(job)
            self._cond.notify_all()
        return job.future

    def stats(self) -> dict[str, int]:
        """jobs, rows, device_calls, shared_calls (calls serving > 1 job), max_rows_per_call, errors,
        joined_while_busy (jobs that arrived during a sampler call), queued, ..."""
        with self._cond:
            out = dict(self._counts)
            out["queued"] = len(self._pending)
        return out

    def close(self, timeout: float | None = 30.0) -> None:
        """Stops taking jobs, finishes the queued ones (up to `timeout`), fails any left with `BatcherClosed`."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left, self._pending = self._pending, []
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed("the server shut down before this request ran"))

    # ------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:  # closed and drained
                    return
                if self.window_s > 0 and not self._closed:
                    # The device was idle: give a burst `window_s` to arrive and share this first call.
                    deadline = time.monotonic() + self.window_s
                    while self._rows_waiting() < self.max_batch and not self._closed:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
            # Back-to-back calls while work keeps arriving; the window applies again once the queue empties.
            while True:
                with self._cond:
                    batch = self._take_next_call()
                    if batch is None:
                        break
                    self._busy = True
                try:
                    self._run(batch)
                except BaseException:  # never lose the worker: callers would wait forever
                    log.exception("batcher: unexpected failure")
                    for j in batch:
                        if not j.future.done():
                            j.future.set_exception(RuntimeError("internal batcher failure"))
                finally:
                    with self._cond:
                        self._busy = False

    def _rows_waiting(self) -> int:
        return sum(len(j.rows) for j in self._pending)

    def _take_next_call(self) -> list[_Job] | None:
        """Removes and returns the jobs of the next sampler call (caller holds `_cond`); None if none wait.

        The oldest live job leads, so no job starves; later jobs with its key fill the call in arrival
        order while they fit in `max_batch` rows (a job larger than `max_batch` runs alone)."""
        while self._pending:
            lead = self._pending.pop(0)
            if lead.future.set_running_or_notify_cancel():
                break
            self._counts["cancelled"] += 1  # its client left (timed out) before it ran
        else:
            return None
        batch, rows, keep = [lead], len(lead.rows), []
        for j in self._pending:
            if j.key == lead.key and rows + len(j.rows) <= self.max_batch:
                if j.future.set_running_or_notify_cancel():
                    batch.append(j)
                    rows += len(j.rows)
                else:
                    self._counts["cancelled"] += 1
            else:
                keep.append(j)
        self._pending = keep
        return batch

    def _run(self, batch: list[_Job]) -> None:
        rows = [r for j in batch for r in j.rows]
        max_new = max(j.max_new_tokens for j in batch)
        sampling = batch[0].sampling
        if sampling.greedy:
            seed = 0
        elif batch[0].seed is not None:
            seed = batch[0].seed
        else:
            seed = self._rng.randrange(2**31)
        t0 = time.monotonic()
        try:
            with self.lock:
                outs = self.sampler.generate(self.params_fn(), rows, max_new_tokens=max_new, sampling=sampling,
                                             seed=seed)
            if len(outs) != len(rows):
                raise RuntimeError(f"sampler returned {len(outs)} completions for {len(rows)} rows")
        except Exception as e:
            log.exception("batcher: sampler call for %d job(s), %d row(s) failed", len(batch), len(rows))
            with self._cond:
                self._counts["errors"] += 1
            for j in batch:
                j.future.set_exception(e)
            return
        with self._cond:
            self._counts["device_calls"] += 1
            self._counts["shared_calls"] += int(len(batch) > 1)
            self._counts["max_rows_per_call"] = max(self._counts["max_rows_per_call"], len(rows))
        log.debug("batcher: %d job(s), %d row(s), max_new=%d in %.1f ms", len(batch), len(rows), max_new,
                  1e3 * (time.monotonic() - t0))
        i = 0
        for j in batch:
            j.future.set_result([_truncate(c, j.max_new_tokens) for c in outs[i:i + len(j.rows)]])
            i += len(j.rows)


def _truncate(c: Completion, n: int) -> Completion:
    """A row generated for a longer batch-mate, cut to this job's own limit."""
    if len(c.tokens) <= n:
        return c
    return Completion(list(c.tokens[:n]), list(c.logprobs[:n]), "length")
