import pytest

import autopar
from autopar import _config, parallel
from tests.helpers import square


def test_defaults_without_environment():
    config = _config.from_environ({})
    assert config.kind == "auto"
    assert config.workers is None and config.chunksize is None
    assert config.start_method in _config.START_METHODS
    assert config.max_threads == 128


def test_environment_values_are_parsed():
    config = _config.from_environ(
        {
            "AUTOPAR_KIND": "Thread",
            "AUTOPAR_WORKERS": "3",
            "AUTOPAR_CHUNKSIZE": "7",
            "AUTOPAR_START_METHOD": "spawn",
            "AUTOPAR_TIMEOUT": "2.5",
            "AUTOPAR_PROGRESS": "1",
        }
    )
    assert (config.kind, config.workers, config.chunksize) == ("thread", 3, 7)
    assert config.start_method == "spawn" and config.timeout == 2.5 and config.progress


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AUTOPAR_WORKERS", "lots"),
        ("AUTOPAR_WORKERS", "0"),
        ("AUTOPAR_KIND", "gpu"),
        ("AUTOPAR_CHUNKSIZE", "-1"),
        ("AUTOPAR_START_METHOD", "teleport"),
        ("AUTOPAR_TIMEOUT", "soon"),
        ("AUTOPAR_PROGRESS", "maybe"),
        ("AUTOPAR_WOKERS", "2"),
    ],
)
def test_bad_environment_names_the_variable(var, value):
    with pytest.raises(ValueError, match=var):
        _config.from_environ({var: value})


def test_bad_environment_fails_the_call_not_the_import(monkeypatch):
    monkeypatch.setenv("AUTOPAR_WORKERS", "lots")
    f = parallel(kind="thread")(square)
    with pytest.raises(ValueError, match="AUTOPAR_WORKERS"):
        f.map([1, 2])
    assert f(3) == 9  # the plain call never reads the configuration


@pytest.mark.parametrize(
    ("kwargs", "error", "culprit"),
    [
        ({"kind": "gpu"}, ValueError, "kind"),
        ({"workers": 0}, ValueError, "workers"),
        ({"workers": "4"}, TypeError, "workers"),
        ({"workers": 2.5}, TypeError, "workers"),
        ({"chunksize": 0}, ValueError, "chunksize"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"kind": 3}, TypeError, "kind"),
        ({"workers": True}, TypeError, "workers"),
    ],
)
def test_bad_decorator_arguments_name_the_argument(kwargs, error, culprit):
    with pytest.raises(error, match=culprit):
        parallel(**kwargs)


def test_bad_call_arguments_name_the_argument():
    f = parallel(kind="serial")(square)
    with pytest.raises(ValueError, match="chunksize"):
        f.map([1], chunksize=0)
    with pytest.raises(ValueError, match="timeout"):
        f.map([1], timeout=0)


def test_decorator_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("AUTOPAR_KIND", "process")
    monkeypatch.setenv("AUTOPAR_WORKERS", "1")
    f = parallel(kind="thread", workers=3)(square)
    f.map(range(30))
    assert (f.last_plan.kind, f.last_plan.workers) == ("thread", 3)


def test_environment_beats_default(monkeypatch):
    monkeypatch.setenv("AUTOPAR_KIND", "serial")
    monkeypatch.setenv("AUTOPAR_CHUNKSIZE", "4")
    f = parallel(square)
    assert f.map(range(10)) == [x * x for x in range(10)]
    assert (f.last_plan.kind, f.last_plan.chunksize) == ("serial", 4)


def test_call_argument_beats_decorator():
    f = parallel(kind="thread", chunksize=5)(square)
    f.map(range(20), chunksize=2)
    assert f.last_plan.chunksize == 2


def test_config_is_reread_when_the_environment_changes(monkeypatch):
    monkeypatch.setenv("AUTOPAR_WORKERS", "2")
    assert _config.current().workers == 2
    monkeypatch.setenv("AUTOPAR_WORKERS", "5")
    assert _config.current().workers == 5


def test_not_callable_is_a_type_error():
    with pytest.raises(TypeError, match="callable"):
        parallel(3)


def test_public_names_are_sorted_and_exist():
    assert autopar.__all__ == sorted(autopar.__all__)
    for name in autopar.__all__:
        assert hasattr(autopar, name)
