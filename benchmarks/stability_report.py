"""Judge and write a stability run: per (workload, condition), the worst and the median of
auto's calls against the best warm fixed choice of the same program.

    programs (one JSON dict each, from stability_child) -> Summary -> a table row + misses

Every ratio divides a time by a time measured in the same program, under the same
condition; no absolute time is a result (the best fixed time is shown in small print).
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.write_results import fmt_ratio, fmt_time

# Targets from issue 14 (on 2 cores, ratios measured side by side).
LATER_WORST = 2.0
LATER_MEDIAN = 1.15
FIRST_WORST = 1.5
SERIAL_FIRST_VS_MAP = 1.1
# Calls whose whole work is under TINY seconds are judged by absolute overhead instead
# (issue 14, "cheap first calls"): a first call at most plain map + 3 ms, a later call
# at most the best fixed + 1 ms.
TINY = 0.002
TINY_FIRST_OVERHEAD = 0.003
TINY_LATER_OVERHEAD = 0.001


def plan_label(call: Dict[str, Any]) -> str:
    """ "process x2", "thread x8", or plain "serial" (its one worker says nothing)."""
    return "serial" if call["kind"] == "serial" else f"{call['kind']} x{call['workers']}"


@dataclasses.dataclass
class Summary:
    """What the programs of one (workload, condition) showed."""

    programs: int = 0
    errors: List[str] = dataclasses.field(default_factory=list)
    winners: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    best_times: List[float] = dataclasses.field(default_factory=list)
    first: List[float] = dataclasses.field(default_factory=list)  # ratios to best fixed
    later: List[float] = dataclasses.field(default_factory=list)
    serial_first: List[float] = dataclasses.field(default_factory=list)  # ratios to map
    first_over_map: List[float] = dataclasses.field(default_factory=list)  # seconds
    later_over_best: List[float] = dataclasses.field(default_factory=list)  # seconds
    first_kinds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    later_kinds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    worst_first: Optional[Tuple[float, Dict[str, Any]]] = None
    worst_later: Optional[Tuple[float, Dict[str, Any]]] = None

    @property
    def tiny(self) -> bool:
        return bool(self.best_times) and statistics.median(self.best_times) < TINY

    def add(self, program: Dict[str, Any]) -> None:
        self.programs += 1
        if "crashed" in program:
            self.errors.append(program["crashed"])
            return
        self.errors += program.get("errors", [])
        times = {k: v for k, v in program["fixed"].items() if v}
        if not times:
            return
        name, best = min(times.items(), key=lambda kv: kv[1])
        self.winners[name] += 1
        self.best_times.append(best)
        # A first call pays its pool's start: it is judged against the fixed choices made
        # cold, as a user would write them (pool start included), where measured.
        cold = {k: v for k, v in program.get("cold", {}).items() if v}
        first_best = min(cold.values()) if cold else best
        self._add_first(program["first"], first_best, times.get("serial"))
        for call in program["later"]:
            ratio = call["seconds"] / best
            self.later.append(ratio)
            self.later_over_best.append(call["seconds"] - best)
            self.later_kinds[plan_label(call)] += 1
            if self.worst_later is None or ratio > self.worst_later[0]:
                self.worst_later = (ratio, call)

    def _add_first(self, call: Dict[str, Any], best: float, serial: Optional[float]) -> None:
        ratio = call["seconds"] / best
        self.first.append(ratio)
        self.first_kinds[plan_label(call)] += 1
        if serial:
            self.first_over_map.append(call["seconds"] - serial)
            if call["kind"] == "serial":
                self.serial_first.append(call["seconds"] / serial)
        if self.worst_first is None or ratio > self.worst_first[0]:
            self.worst_first = (ratio, call)

    def misses(self) -> List[str]:
        """The targets missed, in words; an empty list when every target was met."""
        if not self.first:
            return ["no measurement"]
        if self.tiny:
            return self._tiny_misses()
        found = []
        checks = [
            ("later worst", max(self.later, default=None), LATER_WORST),
            ("later median", _median(self.later), LATER_MEDIAN),
            ("first worst", max(self.first), FIRST_WORST),
            ("serial first vs map", max(self.serial_first, default=None), SERIAL_FIRST_VS_MAP),
        ]
        for label, value, limit in checks:
            if value is not None and value > limit:
                found.append(f"{label} {value:.2f}x > {limit}x")
        return found

    def _tiny_misses(self) -> List[str]:
        found = []
        first = max(self.first_over_map, default=None)
        later = max(self.later_over_best, default=None)
        if first is not None and first > TINY_FIRST_OVERHEAD:
            found.append(f"first +{fmt_time(first)} over map > +3 ms")
        if later is not None and later > TINY_LATER_OVERHEAD:
            found.append(f"later +{fmt_time(later)} over best fixed > +1 ms")
        return found


def _median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _counted(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{label} ({n})" for label, n in counter.most_common()) or "-"


def _pair(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{fmt_ratio(max(values))} / {fmt_ratio(_median(values))}"


def row(name: str, condition: str, summary: Summary) -> str:
    """One line of the table."""
    if summary.winners:
        winner, wins = summary.winners.most_common(1)[0]
        median_best = statistics.median(summary.best_times)
        best = (
            f"{winner} ({wins}/{sum(summary.winners.values())}) <sub>{fmt_time(median_best)}</sub>"
        )
    else:
        best = "-"
    serial = "-"
    if summary.serial_first:
        serial = f"{fmt_ratio(max(summary.serial_first))} ({len(summary.serial_first)} of "
        serial += f"{len(summary.first)})"
    chose = f"{_counted(summary.first_kinds)} / {_counted(summary.later_kinds)}"
    missed = summary.misses()
    verdict = "ok" if not missed else "**MISS**: " + "; ".join(missed)
    if summary.tiny:
        verdict += " (tiny: absolute bounds)"
    if summary.errors:
        verdict += f"; ERROR: {summary.errors[0]}"
        if len(summary.errors) > 1:
            verdict += f" (+{len(summary.errors) - 1} more)"
    return (
        f"| {name} | {condition} | {summary.programs} | {best} | {_pair(summary.first)} "
        f"| {_pair(summary.later)} | {serial} | {chose} | {verdict} |"
    )


HEADER = [
    "| workload | condition | programs | best fixed (wins) | auto first worst / median "
    "| auto later worst / median | first vs map when serial | auto chose (first / later) "
    "| targets |",
    "|---|---|---:|---|---:|---:|---:|---|---|",
]

HOW_TO_READ = """\
Each workload ran in several **fresh Python programs**, one after another, quiet and
`loaded` (one busy pure-Python process per core started before the program and stopped
after it; each program runs in a session of its own, so where Linux shares the cores
session by session (autogroups), the program as a whole gets about half the cores: on 2
cores its serial caller runs as fast as on a quiet machine, and two workers share a core).
In each program: `parallel(fn)` (kind auto) is timed on its first call (a
fresh interpreter: no pools, nothing learned) and on its later calls; then the fixed
choices, plain `map`, `parallel(kind="thread")` and `parallel(kind="process")`, each
after one untimed call, best of 2 or 3; and, for first calls, the same choices made
cold as a user would write them (a fresh `ThreadPoolExecutor()` and a fresh
`multiprocessing.Pool()` per call, their start included). **Best fixed** is the fastest
of the warm three in that program (the column names the one that won most often, and
shows its median time in small print). Every ratio is auto's time over the best fixed
time **of the same program**, under the same condition, so a busy machine slows both
sides; worst and median are taken over all programs (first calls) or all later calls of
all programs. First calls are over the best of plain `map` and the cold pools. `first vs
map when serial` is the first call over plain `map`, for programs whose first plan was
serial (worst, and in how many programs). `auto chose` counts plans: first calls, then
later calls. Targets (issue 14): later worst <= 2.0x and median <= 1.15x; first <= 1.5x;
a serial first call <= 1.1x of plain `map`. Rows whose best fixed call takes under 2 ms
are judged by absolute overhead instead: a first call at most plain `map` + 3 ms, a later
call at most the best fixed + 1 ms. Auto's later calls run right after its first call,
before the fixed choices, as they would in a program that uses only auto.
"""


def notes(name: str, condition: str, summary: Summary) -> List[str]:
    """For a row that missed: what auto said when it was worst."""
    if not summary.misses():
        return []
    lines = [f"- **{name}** ({condition}): {'; '.join(summary.misses())}"]
    for label, worst in (
        ("worst first", summary.worst_first),
        ("worst later", summary.worst_later),
    ):
        if worst is not None:
            ratio, call = worst
            lines.append(f"  - {label} {ratio:.2f}x chose {plan_label(call)}: {call['reason']}")
    return lines
