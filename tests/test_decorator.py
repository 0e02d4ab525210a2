import inspect
import pickle
import threading

import pytest

from autopar import ParallelFunction, parallel
from tests import helpers


@parallel(kind="serial")
def documented(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


def test_plain_call_is_unchanged_and_runs_in_the_caller_thread():
    f = parallel(kind="process")(helpers.thread_id)
    assert f(None) == threading.get_ident()
    assert f.last_plan is None  # no pool, no plan


def test_metadata_is_kept():
    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Add two numbers."
    assert documented.__module__ == __name__
    assert str(inspect.signature(documented)) == "(a: int, b: int = 2) -> int"
    assert isinstance(documented, ParallelFunction)
    assert "Add two numbers." in pydoc_text(documented)


def pydoc_text(obj):
    import pydoc

    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


def test_pickles_by_reference_like_the_plain_function():
    assert pickle.loads(pickle.dumps(documented)) is documented
    assert pickle.loads(pickle.dumps(helpers.proc_square)) is helpers.proc_square


def test_local_function_pickles_by_value_with_cloudpickle():
    from autopar._execute.worker import dumps

    def local(x):
        return x + 1

    f = parallel(local)
    clone = pickle.loads(dumps(f))
    assert clone(1) == 2 and clone.map([1, 2]) == [2, 3]


def test_bare_and_called_decorator_forms():
    @parallel
    def a(x):
        return x

    @parallel()
    def b(x):
        return x

    assert a.map([1, 2]) == b.map([1, 2]) == [1, 2]


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    @parallel(kind="thread")
    def scale(self, x):
        return x * self.factor

    @staticmethod
    @parallel(kind="thread")
    def double(x):
        return 2 * x


@pytest.mark.parametrize("kind", ["serial", "thread", "process"])
def test_methods_and_static_methods(kind):
    obj = Scaler(3)
    assert obj.scale(2) == 6
    assert obj.scale.map([1, 2, 3]) == [3, 6, 9]
    assert Scaler.double.map([1, 2]) == [2, 4]
    remote = parallel(kind=kind)(Scaler(5).scale)
    assert remote.map([1, 2]) == [5, 10]


def test_method_plan_is_recorded_on_the_function():
    obj = Scaler(2)
    obj.scale.map([1, 2])
    assert obj.scale.last_plan.kind == "thread"
    assert "thread" in obj.scale.explain()


@pytest.mark.parametrize("kind", ["serial", "thread", "process"])
def test_lambdas_and_closures(kind):
    offset = 10
    assert parallel(kind=kind)(lambda x: x + offset).map(range(5)) == list(range(10, 15))

    def make_adder(n):
        def adder(x):
            return x + n

        return adder

    assert parallel(kind=kind)(make_adder(3)).map([1, 2]) == [4, 5]


def test_last_plan_and_explain():
    f = parallel(kind="thread", workers=3, chunksize=2)(helpers.square)
    assert "no call yet" in f.explain()
    f.map(range(10))
    plan = f.last_plan
    assert (plan.kind, plan.workers, plan.chunksize, plan.n_items) == ("thread", 3, 2, 10)
    assert "requested" in plan.reason
    text = f.explain()
    assert "thread" in text and "workers=3" in text and "chunksize=2" in text


def test_copy_keeps_options():
    import copy

    f = parallel(kind="thread", workers=2)(helpers.square)
    g = copy.deepcopy(f)
    g.map([1, 2])
    assert g.last_plan.workers == 2 and g is not f
