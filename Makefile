# One command to see it work (make demo), one to test (make test), one to measure (make bench).
# The newest Python 3.11 or later on the PATH that runs and has venv (Debian 12 ships 3.11,
# Debian 13 3.13; tested on 3.11).
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3.11 python3; do \
            $$p -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
            && { echo $$p; break; }; done)
ifeq ($(PYTHON),)
$(error no python3.11 or newer found: install python3 (3.11+) with its venv module)
endif
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= ../shared
VAR := var

.PHONY: help demo test bench lint typecheck firmware-check venv deps deps-test clean

help:
	@echo "make demo    simulated city block: camera node, gas, flood and vibration boards"
	@echo "make test    lint, type checks and every test (starts its own brokers)"
	@echo "make bench   speed and memory figures into bench/results/results.md"
	@echo "make lint | typecheck | clean"
	@echo "Afterwards the tools are in $(VENV)/bin: $(VENV)/bin/edge-agent --help,"
	@echo "$(VENV)/bin/edge-sim --help (or '. $(VENV)/bin/activate' first)."

# Two projects, both editable: the agent (what a node's wheel holds) and the simulator
# (sim/pyproject.toml: edge-sim, which runs this checkout's firmware).
$(STAMP): pyproject.toml sim/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./sim
	touch $(STAMP)

venv: $(STAMP)

# Debian packages: the demo, the bench and the tests need the Mosquitto broker and its
# clients (flash.sh's second way to wait for a board's birth message); the tests also need
# systemd-analyze and shellcheck. Installed when missing (as root), else the command to run.
APT_RUN := mosquitto:mosquitto mosquitto_sub:mosquitto-clients
APT_TEST := $(APT_RUN) systemd-analyze:systemd shellcheck:shellcheck
define apt_install
	@missing=""; \
	for pair in $(1); do tool=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "missing Debian packages:$$missing; run: sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps:
	$(call apt_install,$(APT_RUN))

deps-test:
	$(call apt_install,$(APT_TEST))

lint: $(STAMP)
	$(BIN)/ruff check edge_agent sim tests models bench rollout

typecheck: $(STAMP)
	$(BIN)/mypy edge_agent
	$(BIN)/mypy sim --exclude 'sim/upy/'
	$(BIN)/mypy rollout

# pytest exits 5 when it collects no tests: that is not a failure of the code under test.
# Two workers: most of the suite waits on real time (scenarios, outages), not on the CPU.
test: $(STAMP) deps-test lint typecheck
	PATH="$(abspath $(BIN)):/usr/sbin:$$PATH" $(BIN)/python -m pytest -q -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

demo: $(STAMP) deps
	PATH="$(abspath $(BIN)):/usr/sbin:$$PATH" $(BIN)/python -m sim.demo --shared $(SHARED) --var $(VAR)

bench: $(STAMP) deps
	PATH="$(abspath $(BIN)):/usr/sbin:$$PATH" $(BIN)/python -m bench --shared $(SHARED) --out bench/results

clean:
	rm -rf $(VENV) $(VAR) bench/results
