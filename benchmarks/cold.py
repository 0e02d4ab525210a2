"""auto's first call in a fresh interpreter (no pools, nothing measured), beside plain
``map`` timed afterwards in that interpreter: the first call a user's program makes.

Used by write_results.py and bench_cores.py for their "cold first call" lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import json, sys, time
sys.path.insert(0, {root!r})
from autopar import parallel
{setup}
f = parallel(fn)
t0 = time.perf_counter(); f.map(items); first = time.perf_counter() - t0
t0 = time.perf_counter(); list(map(fn, items)); plain = time.perf_counter() - t0
plan = f.last_plan
print(json.dumps({{"first": first, "plain": plain, "kind": plan.kind,
                  "workers": plan.workers, "reason": plan.reason}}))
"""


def first_call(setup: str) -> Dict[str, Any]:
    """Run ``setup`` (code that defines ``fn`` and ``items``) in a fresh interpreter, then
    auto's first call and plain ``map`` there: {"first", "plain"} in seconds, and the
    plan's "kind", "workers" and "reason"; or {"error": one line} if it failed."""
    script = _SCRIPT.format(root=str(ROOT), setup=setup)
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
