"""``python -m autopar info``: what autopar knows about this machine."""

from __future__ import annotations

import sys

from . import _config


def print_info() -> None:
    config = _config.current()
    print(f"python:        {sys.version.split()[0]} ({sys.platform})")
    print(f"cpus:          {_config.cpu_count()}")
    print(f"start method:  {config.start_method}")
    print(f"default kind:  {config.kind}")
