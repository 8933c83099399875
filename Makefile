# Two commands do all set-up: `make run` and `make test` (see README).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DEBUG ?= 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
REDIS_URL ?= redis://127.0.0.1:6379/5

.PHONY: install run test test-unit test-integration lint bench clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, monai, django, celery, pydicom"  # fail here if the install did not
	touch $(STAMP)

install: $(STAMP)

# A development checkout: `manage.py` run by hand reads its defaults from here, so the
# README's commands work as printed; variables set in the environment still win.
LOCAL_ENV := $(or $(VAR_DIR),var)/local.env

$(LOCAL_ENV):
	mkdir -p $(dir $@)
	printf '# Written by `make run`: defaults for manage.py in this checkout only.\nDEBUG=1\n' > $@

run: install $(LOCAL_ENV)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_demo
	$(PY) manage.py rundev

test: install
	$(PY) -m pytest tests --ignore=tests/integration
	DATABASE_URL=$(PG_URL) CELERY_BROKER_URL=$(REDIS_URL) \
		$(PY) -m pytest tests/integration

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install
	$(PY) -m bench --help

clean:
	rm -rf var .pytest_cache
