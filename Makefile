# One command to see it work (make demo), one to test (make test), one to measure (make bench).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= ../shared
VAR := var

.PHONY: demo test bench lint typecheck firmware-check venv deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests and demo need: the Mosquitto broker, systemd-analyze, shellcheck,
# mosquitto_sub (flash.sh's second way to wait for a board's birth message).
deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check edge_agent sim tests models bench

typecheck: $(STAMP)
	$(BIN)/mypy edge_agent
	$(BIN)/mypy sim --exclude 'sim/upy/'

# pytest exits 5 when it collects no tests: that is not a failure of the code under test.
# Two workers: most of the suite waits on real time (scenarios, outages), not on the CPU.
test: $(STAMP) deps lint typecheck
	PATH="$(abspath $(BIN)):/usr/sbin:$$PATH" $(BIN)/python -m pytest -q -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

demo: $(STAMP) deps
	PATH="$(abspath $(BIN)):/usr/sbin:$$PATH" $(BIN)/python -m sim.demo --shared $(SHARED) --var $(VAR)

bench: $(STAMP) deps
	PATH="$(abspath $(BIN)):/usr/sbin:$$PATH" $(BIN)/python -m bench --shared $(SHARED) --out bench/results

clean:
	rm -rf $(VENV) $(VAR) bench/results
