# Two commands on a fresh machine:   make demo   (the main job)   and   make test.
# Both build .venv from requirements.lock first (exact versions; pyproject.toml keeps the ranges).

# Python 3.12 (LeRobot >= 0.5 needs it): `python3.12` on PATH, else a pyenv 3.12 install.
PYTHON ?= $(shell for p in python3.12 "$$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$$p"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
OUT ?= outputs
# Headless MuJoCo rendering on the CPU (Mesa's EGL); override with MUJOCO_GL=osmesa where EGL is missing.
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1

.PHONY: demo test venv lock clean bench bench-quick

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml setup.py
	@test -n "$(PYTHON)" || { echo "error: Python 3.12 not found; install it (e.g. pyenv install 3.12) or pass PYTHON=/path/to/python3.12"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: venv
	$(BIN)/roboreward demo --out $(OUT)/demo

test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench-quick: venv
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b --quick || exit 1; done

bench: venv
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Re-resolve the lock from pyproject.toml's ranges (run deliberately, then commit requirements.lock).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^roboreward' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(OUT)
