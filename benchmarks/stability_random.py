"""Drawn workloads: cost profiles, kinds of work, payloads and sizes nobody chose.

``draw(seed, index, quick)`` returns a small dict of parameters; it depends on nothing
but its arguments, so a fresh program rebuilds the same workload from the seed and the
index. The dict is machine-independent (microseconds of work, bytes, item counts); the
program turns it into items with the run's :class:`Calibration`.

    draw(seed, i) -> params -> weights(profile) x mean cost -> items (wait, spin, rounds, bytes)
    run_drawn(item): sleep the wait, spin the Python part, then the rounds of C work

Profiles cycle with the index and kinds of work with the index modulo another length, so
any 30 draws hold every pairing often enough; sizes, costs and payloads are drawn.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from functools import partial
from typing import Any, Dict, Iterator, List, Tuple

from benchmarks.stability_base import KIB, MIB, Built, Context, Entry, hash_round
from benchmarks.workloads import spin

PROFILES = ("constant", "rising", "falling", "bimodal", "clustered", "heavy_tailed")
# Seven slots against six profiles: the pairs cycle through all 42 combinations.
WORKS = ("python", "sha256", "python", "wait_compute", "zlib", "python", "wait")
# Used only to keep a draw's serial time in range (the program's calibration sets the
# real round counts): a 2-core EPYC VM, see benchmarks/stability_base.calibrate.
NOMINAL_ROUND_US = {"sha256": (0.5, 0.0005), "zlib": (13.0, 0.017)}
SLEEP_FLOOR_US = 300  # below this, time.sleep's own overhead is most of the item
SIZE_BANDS = {"few": (5, 20), "some": (50, 1000), "many": (1000, 50_000)}


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw(seed: int, index: int, quick: bool) -> Dict[str, Any]:
    """The parameters of drawn workload ``index`` of ``seed`` (quick: smaller calls)."""
    rng = random.Random(f"stability:{seed}:{index}")
    profile = PROFILES[index % len(PROFILES)]
    work = WORKS[index % len(WORKS)]
    band = rng.choices(list(SIZE_BANDS), weights=(3, 4, 3))[0]
    n = round(_log_uniform(rng, *SIZE_BANDS[band]))
    total_us = _log_uniform(rng, 50e3, 400e3 if quick else 2e6)
    large = rng.random() < 0.5
    payload = round(_log_uniform(rng, 64 * KIB, MIB) if large else _log_uniform(rng, 100, 4 * KIB))
    payload = max(100, min(payload, (16 if quick else 64) * MIB // n))
    if work in NOMINAL_ROUND_US:  # at least one round per item
        fixed, per_byte = NOMINAL_ROUND_US[work]
        n = min(n, int(total_us / (fixed + per_byte * payload)))
    if work.startswith("wait"):
        n = min(n, int(total_us / SLEEP_FLOOR_US))
    n = max(5, n)
    params: Dict[str, Any] = {
        "name": f"r{index:02d}-{profile}-{work}",
        "profile": profile,
        "work": work,
        "n": n,
        "mean_us": round(total_us / n, 1),
        "payload": payload,
        "wait_share": {"wait": 1.0, "wait_compute": round(rng.uniform(0.3, 0.9), 2)}.get(work, 0),
        "item_seed": rng.randrange(2**32),
    }
    params.update(_profile_params(profile, rng))
    return params


def _profile_params(profile: str, rng: random.Random) -> Dict[str, Any]:
    if profile in ("bimodal", "clustered"):
        return {"heavy_share": round(rng.uniform(0.05, 0.3), 2), "heavy_x": rng.randint(5, 20)}
    if profile == "heavy_tailed":
        return {"alpha": round(rng.uniform(1.1, 2.0), 2)}
    return {}


def weights(params: Dict[str, Any]) -> List[float]:
    """Each item's share of the cost, with mean 1."""
    n, profile = params["n"], params["profile"]
    rng = random.Random(params["item_seed"])
    if profile == "constant":
        raw = [1.0] * n
    elif profile in ("rising", "falling"):
        raw = [(i + 0.5) / n for i in range(n)]
        raw = raw if profile == "rising" else raw[::-1]
    elif profile == "heavy_tailed":
        raw = [min(100.0, rng.paretovariate(params["alpha"])) for _ in range(n)]
    else:
        heavy = max(1, round(n * params["heavy_share"]))
        if profile == "bimodal":
            marks = set(rng.sample(range(n), heavy))
        else:
            start = rng.randrange(n - heavy + 1)
            marks = set(range(start, start + heavy))
        raw = [float(params["heavy_x"]) if i in marks else 1.0 for i in range(n)]
    mean = sum(raw) / n
    return [w / mean for w in raw]


def items(params: Dict[str, Any], context: Context) -> List[Tuple[float, int, str, int, bytes]]:
    """The drawn workload's items on this machine: (wait s, spin count, work, rounds, bytes)."""
    calibration = context.calibration
    work, size = params["work"], params["payload"]
    base = random.Random(params["item_seed"]).randbytes(size)
    found = []
    for i, share in enumerate(weights(params)):
        cost = params["mean_us"] * share
        wait = cost * params["wait_share"]
        computing = cost - wait
        if work in NOMINAL_ROUND_US:
            count, rounds = 0, max(1, round(computing / calibration.round_us(work, size)))
        else:
            count, rounds = calibration.spin_count(computing), 0
        # Distinct bytes per item, so a pickler cannot send one object for many.
        payload = i.to_bytes(4, "little") + base[4:]
        found.append((wait / 1e6, count, work, rounds, payload))
    return found


def run_drawn(item: Tuple[float, int, str, int, bytes]) -> int:
    """One drawn item: wait, then compute in Python, then C rounds over the payload."""
    wait, count, work, rounds, payload = item
    if wait:
        time.sleep(wait)
    acc = len(payload) + (spin(count) if count else 0)
    for _ in range(rounds):
        acc += hash_round(work, payload)
    return acc


@contextlib.contextmanager
def _build(params: Dict[str, Any], context: Context) -> Iterator[Built]:
    yield run_drawn, items(params, context)


def _us(value: float) -> str:
    return f"{value / 1e3:.3g} ms" if value >= 1e3 else f"{value:.3g} us"


def describe(params: Dict[str, Any]) -> str:
    """One line for the report: what was drawn."""
    extra = {k: params[k] for k in ("heavy_share", "heavy_x", "alpha") if k in params}
    shape = ", ".join(f"{k} {v}" for k, v in extra.items())
    wait = f", {params['wait_share']:.0%} waiting" if params["wait_share"] else ""
    return (
        f"{params['n']:,} items, {params['profile']}{f' ({shape})' if shape else ''}, "
        f"{params['work']}{wait}, mean {_us(params['mean_us'])} of work, "
        f"{params['payload']:,} B each"
    )


def entries(seed: int, count: int, *, quick: bool) -> List[Entry]:
    """``count`` drawn workloads of ``seed``."""
    found = []
    for index in range(count):
        params = draw(seed, index, quick)
        found.append(
            Entry(
                params["name"],
                "random",
                describe(params),
                partial(_build, params),
                params=params,
            )
        )
    return found
