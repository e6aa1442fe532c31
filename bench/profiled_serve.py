"""`jobscheduler serve` under pyinstrument, for the phases whose targets the service missed.

pyinstrument samples only the thread it was started on, while the service works on many: the
gRPC server's pool threads (decoding, the handler, encoding) and the informer threads that
apply watch events to the cache. So every unary RPC task of the pool, and every
JobCache.apply call, runs under a profiler of its own, and each one's thread CPU time
(time.thread_time) is added up. The bench drives these runs one call at a time, so the wall
time pyinstrument samples is the call's own work plus its waits on kube-apiserver
(_SSLSocket.read), not threads queueing for the GIL. (Clocking pyinstrument by thread CPU
time instead reads that clock, a system call, on every Python call, and inflates call-heavy
code several times over.) When the service stops, the sessions are merged, threads of one
kind folded into one tree, and written to BENCH_PROFILE_OUT (.txt: CPU split, hottest
functions, call trees; the .json files open with `pyinstrument --load`). The service's code
and settings are untouched; the profiler's overhead makes these runs slower, so their
timings are never reported as results.

    BENCH_PROFILE_OUT=/tmp/p.txt python -m bench.profiled_serve serve
"""

from __future__ import annotations

import concurrent.futures
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

SAMPLE_INTERVAL = 0.0002  # seconds; a call takes from a fraction of a millisecond to a few


@dataclass
class Recorder:
    """Profiles and thread CPU seconds of one kind of work (RPC tasks, cache updates)."""

    title: str
    threads: str  # what the call tree calls the threads doing this work
    sessions: list[Session] = field(default_factory=list)
    cpu_seconds: float = 0.0
    calls: int = 0
    # Process CPU (all threads) from the start of the first call to the end of the last one.
    window_started: float | None = None
    window_ended: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.window_started is None:
            self.window_started = time.process_time()
        profiler = Profiler(interval=SAMPLE_INTERVAL, async_mode="disabled")
        cpu_started = time.thread_time()
        profiler.start()
        try:
            return fn(*args, **kwargs)
        finally:
            session = profiler.stop()
            used = time.thread_time() - cpu_started
            with self.lock:
                self.sessions.append(session)
                self.cpu_seconds += used
                self.calls += 1
                self.window_ended = time.process_time()


RPC_TASKS = Recorder("gRPC pool tasks (unary JobScheduler RPCs: decode, handler, encode)", "rpc-pool")
CACHE_UPDATES = Recorder("watch-cache updates (JobCache.apply, on the informer threads)", "informers")


class ProfilingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The gRPC server's pool, with each unary JobScheduler RPC task profiled."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        if is_unary_jobscheduler_call(args):
            return super().submit(RPC_TASKS.run, fn, *args, **kwargs)
        return super().submit(fn, *args, **kwargs)


def is_unary_jobscheduler_call(args: tuple[Any, ...]) -> bool:
    """grpc submits context.run(_unary_response_in_pool | _stream_response_in_pool, rpc_event,
    state, handler, ...). Streams (WatchJob/WatchJobs) mostly wait and would drown the rest; the
    health checks (the bench's readiness probes among them) are not the load being profiled.
    The JobScheduler handlers may be wrapped, so the health servicer is what is recognised."""
    if len(args) < 4 or getattr(args[0], "__name__", "") != "_unary_response_in_pool":
        return False
    handler = inspect.unwrap(args[3])
    return type(getattr(handler, "__self__", None)).__name__ != "HealthServicer"


def merge_sessions(sessions: list[Session], *, threads: str) -> Session:
    """One session from many, merged pairwise (a left fold would copy the records n² times),
    with every thread's root frame renamed to `threads` so that their call trees fold into one."""
    for session in sessions:
        for stack, _ in session.frame_records:
            if stack and "\x00<thread>\x00" in stack[0]:
                stack[0] = f"{threads}\x00<thread>\x000"
    while len(sessions) > 1:
        pairs = [Session.combine(a, b) for a, b in zip(sessions[::2], sessions[1::2], strict=False)]
        sessions = pairs + ([sessions[-1]] if len(sessions) % 2 else [])
    return sessions[0]


def hottest_functions(session: Session, *, limit: int = 25) -> str:
    """Seconds sampled with each function on top of the stack (its self time), largest first:
    each sample's innermost frame is the one that was running."""
    total = sum(seconds for _, seconds in session.frame_records) or 1.0
    by_function: dict[tuple[str, str], float] = {}
    for stack, seconds in session.frame_records:
        function, path, line = [*stack[-1].split("\x01")[0].split("\x00"), "", ""][:3]
        key = (function, f"{shorten(path)}:{line}" if line else shorten(path))
        by_function[key] = by_function.get(key, 0.0) + seconds
    ranked = sorted(by_function.items(), key=lambda item: -item[1])[:limit]
    return "\n".join(
        f"{seconds:8.4f}s {seconds / total:6.1%}  {function}  {where}"
        for (function, where), seconds in ranked
    )


WORK_TREE = Path(__file__).resolve().parent.parent


def shorten(path: str) -> str:
    """A source path from its package on (site-packages/… or the work tree), or as it is."""
    for marker in ("site-packages/", f"{WORK_TREE}/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return path


def strip_banner(text: str) -> str:
    """The rendered profile without pyinstrument's ASCII-art header."""
    lines = text.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Profile at")), 0)
    return "\n".join(lines[start:]).strip("\n")


def write_profile(out: Path) -> None:
    window = RPC_TASKS.window_ended - (RPC_TASKS.window_started or RPC_TASKS.window_ended)
    parts = [
        "pyinstrument profile of the service, one call at a time, wall-clock seconds",
        "(_SSLSocket.read: waiting for kube-apiserver; lock.acquire: waiting on a lock)",
        "",
        f"process CPU, all threads, from the first profiled RPC to the last: {window:.2f}s, of which",
    ]
    parts += [
        f"  {r.title}: {r.calls} calls, {r.cpu_seconds:.2f}s thread CPU "
        f"({r.cpu_seconds * 1000 / max(r.calls, 1):.3f} ms per call)"
        for r in (RPC_TASKS, CACHE_UPDATES)
    ]
    parts.append("  the rest: gRPC C core, watch stream decoding, health probes, garbage collection")
    for recorder in (RPC_TASKS, CACHE_UPDATES):
        if not recorder.sessions:
            continue
        session = merge_sessions(list(recorder.sessions), threads=recorder.threads)
        tree = ConsoleRenderer(unicode=False, color=False).render(session)
        parts += [
            "",
            f"== {recorder.title}: hottest functions (self time) ==",
            hottest_functions(session),
            "",
            f"== {recorder.title}: call tree ==",
            strip_banner(tree),
        ]
        name = "rpc" if recorder is RPC_TASKS else "cache"
        session.save(out.with_name(f"{out.stem}-{name}.json"))
    out.write_text("\n".join(parts) + "\n")


def main() -> int:
    # Before jobscheduler.transport.server looks it up: build_server calls futures.ThreadPoolExecutor(...).
    concurrent.futures.ThreadPoolExecutor = ProfilingExecutor  # type: ignore[misc]
    from jobscheduler.cli.main import main as jobscheduler_main
    from jobscheduler.kube.cache import JobCache

    apply = JobCache.apply

    def profiled_apply(self: JobCache, *args: Any, **kwargs: Any) -> None:
        # Only the informers' calls: an RPC's own observe_job is already inside its RPC's profile.
        if threading.current_thread().name.startswith("informer-"):
            CACHE_UPDATES.run(apply, self, *args, **kwargs)
        else:
            apply(self, *args, **kwargs)

    JobCache.apply = profiled_apply  # type: ignore[method-assign]
    out = Path(os.environ.get("BENCH_PROFILE_OUT", "profile.txt"))
    try:
        return jobscheduler_main(sys.argv[1:]) or 0
    finally:
        write_profile(out)


if __name__ == "__main__":
    sys.exit(main())
