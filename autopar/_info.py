"""``python -m autopar info``: what autopar measures on this machine, as auto sees it."""

from __future__ import annotations

import sys
from typing import Dict

from . import _config, _cpus
from ._auto import pool_costs, queued_time


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _measured_ms(measured: Dict[str, float], name: str) -> str:
    # (Not measured where the pool was already running, or had a single worker.)
    return _ms(measured[name]) if name in measured else "not measured"


def print_info() -> None:
    """Measure the pool costs (this starts a process pool) and print them."""
    config = _config.current()
    cores = _config.cpu_count()
    threads = pool_costs.thread_costs()
    cold = pool_costs.warm_process_pool(config, cores)
    measured = pool_costs.measured()
    rows = [
        ("python", f"{sys.version.split()[0]} ({sys.platform})"),
        ("cpus usable", str(cores)),
        ("cpus from", _cpus.budget().source),
        ("GIL", "enabled" if _cpus.gil_enabled() else "disabled: threads run Python in parallel"),
        ("default kind", config.kind),
        ("process start method", config.start_method),
        ("thread start (per thread)", _ms(threads["thread_start"])),
        ("thread dispatch (per chunk)", _ms(threads["thread_dispatch"])),
        (f"process pool cold start ({cores} workers)", _ms(cold)),
        ("  of which each further worker", _measured_ms(measured, "process_worker_start")),
        ("process dispatch (per chunk)", _ms(measured["process_dispatch"])),
        ("  the caller's share (per chunk)", _measured_ms(measured, "process_handoff")),
        ("buffers to processes via shared memory", _shared_from()),
        ("max threads for waiting work", str(config.max_threads)),
        ("time queued for a core", _queue_time()),
        ("calibration budget", f"{config.calibration_ms:g} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _shared_from() -> str:
    from ._execute import shared_buffers

    m = shared_buffers.measured()
    return (
        f"from {m.threshold // 1024} KiB: a segment's fixed cost {m.fixed * 1e6:.0f} us over "
        f"the pipe's extra {m.saved * 2**20 * 1e3:.3f} ms per MiB (least of "
        f"{shared_buffers.MEASURE_RUNS}; clamped to {shared_buffers.MIN_SHARED // 1024}.."
        f"{shared_buffers.MAX_SHARED // 1024} KiB)"
    )


def _queue_time() -> str:
    # Whether calibration can tell a computing item starved of cores from a waiting one.
    clock = queued_time.for_this_thread()
    if clock.reads:
        return "read from /proc: computing starved of cores is not taken for waiting"
    return "not readable here: on a busy machine, computing may look like waiting"
