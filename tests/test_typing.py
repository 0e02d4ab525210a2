"""mypy --strict on a typed example: the decorator keeps the function's types."""

import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

# Older mypy writes builtins.list[builtins.int], newer list[int].
REVEALED_LIST_OF_INT = r'Revealed type is "(?:builtins\.)?list\[(?:builtins\.)?int\]"'

pytest.importorskip("mypy", reason="the typing check needs mypy: pip install '.[dev]'")


def mypy(*paths, cache):
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mypy-cache")


@pytest.mark.timeout(300)
def test_typed_usage_passes_mypy_strict(cache):
    proc = mypy(ROOT / "tests" / "typed_usage.py", cache=cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # reveal_type shows what an editor shows for f.map on `def f(x: int) -> int`.
    revealed = re.findall(REVEALED_LIST_OF_INT, proc.stdout)
    assert len(revealed) == 2, proc.stdout


@pytest.mark.timeout(300)
def test_wrong_use_is_caught(cache, tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        textwrap.dedent(
            """
            from autopar import parallel

            @parallel
            def square(x: int) -> int:
                return x * x

            @parallel(kind="thread")
            async def fetch(x: int) -> int:
                return x

            square("three")
            name: str = square.map([1])[0]
            count: int = fetch.map([1])
            """
        )
    )
    proc = mypy(wrong, cache=cache)
    assert proc.returncode == 1
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["12", "13", "14"], proc.stdout


def test_typed_usage_runs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "typed_usage.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
