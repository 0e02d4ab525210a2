"""What a call ran and why: the `Plan` behind ``f.last_plan`` and ``f.explain()``."""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional


@dataclasses.dataclass(frozen=True)
class Plan:
    """The execution chosen for one call.

    ``predicted`` maps each candidate kind to its predicted seconds for the whole call, and
    ``measured`` holds what calibration observed per item (seconds, or ratios for
    ``cpu_fraction`` and ``thread_speedup``); both are empty when the kind was named.
    """

    kind: str
    workers: int
    chunksize: Optional[int]
    reason: str
    n_items: Optional[int] = None
    predicted: Mapping[str, float] = dataclasses.field(default_factory=dict)
    measured: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def explain(self) -> str:
        """A short account a user can read: the choice, the reason, the numbers behind it."""
        size = "unknown" if self.n_items is None else str(self.n_items)
        chunks = "adaptive" if self.chunksize is None else str(self.chunksize)
        lines = [
            f"ran on: {self.kind} (workers={self.workers}, chunksize={chunks}, items={size})",
            f"why:    {self.reason}",
        ]
        blas = _blas_line(self.kind, self.workers)
        if blas is not None:
            lines.append(f"blas:   {blas}")
        if self.measured:
            lines.append("measured per item:")
            lines += [f"  {name:<22} {_fmt(name, v)}" for name, v in self.measured.items()]
        if self.predicted:
            best = min(self.predicted.values())
            lines.append("predicted time for this call:")
            for kind, seconds in sorted(self.predicted.items(), key=lambda kv: kv[1]):
                mark = "  <- chosen" if kind == self.kind else ""
                ratio = f"{seconds / best:6.1f}x" if best > 0 else ""
                lines.append(f"  {kind:<8} {_seconds(seconds):>10} {ratio}{mark}")
        return "\n".join(lines)


def _blas_line(kind: str, workers: int) -> Optional[str]:
    if workers < 2:
        return None  # (nothing to cap, and no need to load the running layer)
    from ._execute.blas_limits import describe

    return describe(kind, workers)


def _fmt(name: str, value: float) -> str:
    if value != value:  # NaN: a quantity the plan did not need and did not measure
        return (
            "not measured (processes were not in question)"
            if name == "function_bytes"
            else "unknown"
        )
    if name.endswith(("fraction", "speedup")):
        return f"{value:.2f}"
    if name == "items_sampled":
        return f"{int(value)}"
    if name.endswith("_bytes"):
        return _size(value)
    return _seconds(value)


def _size(value: float) -> str:
    if value >= 2**20:
        return f"{value / 2**20:.1f} MiB"
    if value >= 2**10:
        return f"{value / 2**10:.1f} KiB"
    return f"{int(value)} B"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} us"
