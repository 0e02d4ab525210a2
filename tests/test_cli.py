"""The command line, run as users run it: a fresh interpreter under a timeout."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from autopar.__main__ import main
from tests.conftest import ROOT


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "autopar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_help_lists_both_commands():
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m autopar")
    assert "demo" in proc.stdout and "info" in proc.stdout


@pytest.mark.parametrize(("command", "expected"), [("demo", "--scale"), ("info", "CPU budget")])
def test_help_of_each_command(command, expected):
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: python -m autopar {command}" in proc.stdout
    assert expected in proc.stdout


def test_info_prints_the_machine():
    proc = cli("info")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.lower()
    assert "python" in text and "cpus" in text and "start method" in text
    assert "queued for a core" in text
    assert "cpus from" in text and "cgroup" in text  # the budget names its source


def test_quick_demo_prints_the_table():
    proc = cli("demo", "--scale", "0.05", "--repeat", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header[0] == "workload" and "serial" in header and "processes" in header
    assert "autopar chose" in proc.stdout


@pytest.mark.parametrize(
    "args", [(), ("demo", "--scale", "0"), ("demo", "--repeat", "0"), ("nonsense",)]
)
def test_bad_arguments_exit_2_with_usage(args):
    proc = cli(*args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and proc.stdout == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"autopar {importlib.metadata.version('autopar')}"


def test_verbose_turns_on_the_autopar_debug_log():
    code = (
        "import sys, logging; from autopar.__main__ import main; main(['-v', 'info']);"
        "from autopar import parallel; parallel(kind='serial')(abs).map([-1])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "autopar DEBUG" in proc.stderr and "serial" in proc.stderr


def test_console_script_points_at_main():
    scripts = importlib.metadata.distribution("autopar").entry_points
    (script,) = [e for e in scripts if e.group == "console_scripts" and e.name == "autopar"]
    assert script.load() is main


def test_console_script_runs_under_its_own_name():
    # pip puts the script beside the interpreter of the environment autopar is installed in.
    script = Path(sys.executable).with_name("autopar")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: autopar ")
