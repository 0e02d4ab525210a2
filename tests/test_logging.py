"""The library logs on the `autopar` logger and never prints (only the command line does)."""

import ast
import logging
from pathlib import Path

import autopar
from autopar import parallel
from autopar._config import Config
from autopar._execute import registry
from autopar._execute.backends.base import Replacement
from tests import helpers
from tests.conftest import run_python

PACKAGE = Path(autopar.__file__).parent
CLI_MODULES = {"__main__.py", "_demo.py", "_info.py"}


def test_the_autopar_logger_has_a_null_handler():
    handlers = logging.getLogger("autopar").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_no_print_outside_the_command_line():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in CLI_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_a_decision_is_logged_at_debug(caplog):
    with caplog.at_level(logging.DEBUG, logger="autopar"):
        parallel(kind="serial")(helpers.square).map([1, 2])
    assert any(r.levelno == logging.DEBUG and "serial" in r.getMessage() for r in caplog.records)


class _Broken:
    kind = "serial"
    stopped = False

    def replacement(self, config, workers):
        return Replacement("a worker process died", broken=True)

    def shutdown(self):
        self.stopped = True


class _TooSmall(_Broken):
    def replacement(self, config, workers):
        return Replacement(f"{workers} workers wanted, the pool has 1")


def _replace(monkeypatch, caplog, old):
    monkeypatch.setitem(registry._backends, "serial", old)
    with caplog.at_level(logging.DEBUG, logger="autopar"):
        new = registry.get("serial", Config(), 2)
    assert new is not old and old.stopped
    return [r for r in caplog.records if "replacing" in r.getMessage()]


def test_replacing_a_broken_pool_is_a_warning(monkeypatch, caplog):
    (record,) = _replace(monkeypatch, caplog, _Broken())
    assert record.levelno == logging.WARNING and "died" in record.getMessage()


def test_replacing_a_pool_that_is_too_small_is_a_debug_decision(monkeypatch, caplog):
    (record,) = _replace(monkeypatch, caplog, _TooSmall())
    assert record.levelno == logging.DEBUG


def test_a_program_without_logging_setup_prints_no_warning():
    proc = run_python(
        """
        import logging
        from autopar import parallel
        from tests.helpers import square
        logging.getLogger("autopar").warning("recovered from something")
        print(parallel(kind="thread")(square).map([1, 2]))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("[1, 4]\n", "")
