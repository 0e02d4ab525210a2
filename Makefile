# The two commands of the README's quick start: `make demo` and `make test`.
# Each makes .venv (once, and again when pyproject.toml changes) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,progress,dask,dev,blas]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m autopar demo

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/write_results.py

lint: $(VENV)/.installed
	$(PY) -m ruff check autopar tests benchmarks
	$(PY) -m ruff format --check autopar tests benchmarks
	$(PY) -m mypy

# The documentation site (mkdocs.yml), built strictly: a broken link or an API reference
# that does not resolve fails. Its tools are installed on first use, apart from the rest.
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
