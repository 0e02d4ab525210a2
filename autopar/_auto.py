"""kind="auto" (placeholder rule until calibration lands): threads for more than one item."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

from ._config import Config
from ._dispatch import FunctionState, execute, plan_named


def start(
    state: FunctionState,
    fn: Callable[..., Any],
    shippable: Callable[..., Any],
    config: Config,
    items: Iterable[Any],
    n_items: Optional[int],
    *,
    ordered: bool,
    star: bool,
) -> Iterator[Any]:
    kind = "serial" if n_items is not None and n_items <= 1 else "thread"
    plan = plan_named(kind, config, n_items, "placeholder rule")
    state.last_plan = plan
    return execute(plan, fn, shippable, config, items, ordered=ordered, star=star)
