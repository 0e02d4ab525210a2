"""Functions the tests send to workers: module level, so processes can import them."""

from __future__ import annotations

import os
import threading
import time

from autopar import parallel


def square(x):
    return x * x


def add(a, b):
    return a + b


def identity(x):
    return x


def pid(_):
    return os.getpid()


def thread_id(_):
    return threading.get_ident()


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"item {x} is bad")
    return x


def nap(seconds):
    time.sleep(seconds)
    return seconds


@parallel(kind="process")
def proc_square(x):
    """Square x in a worker process."""
    return x * x


@parallel(kind="thread", workers=2)
def outer_calls_inner(n):
    # A decorated function mapping another one from inside a worker.
    return sum(thread_square.map(range(n)))


@parallel(kind="thread", workers=4)
def thread_square(x):
    return x * x


def spy_chunk_sizes(monkeypatch, backend_class):
    """A list that fills with the size of each chunk ``backend_class`` is handed."""
    sizes = []
    submit = backend_class.submit

    def spy(self, payload, start, items, *, star, deadline):
        sizes.append(len(items))
        return submit(self, payload, start, items, star=star, deadline=deadline)

    monkeypatch.setattr(backend_class, "submit", spy)
    return sizes
