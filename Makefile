# FleetSight developer entry points. `make demo` and `make test` install what
# they need (system packages, a virtualenv, Kafka's jars) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: deps venv services services-down services-status lint rules test test-unit chaos soak demo compose-check compose-test clean

deps:
	@bash scripts/install-deps.sh

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# setuptools' build backend prints a block of asterisks about editable installs on every
	@# install (a warning to people with a folder named like a package in their working directory).
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e '.[cloud,edge,eval,dev]'
	@touch $@

venv: $(BIN)/.installed

services: deps venv
	$(BIN)/python -m devtools services up

services-down: venv
	$(BIN)/python -m devtools services down

services-status: venv
	$(BIN)/python -m devtools services status

# Lint (ruff), types (mypy: strict on the contract and the pure cores) and
# the layers (import-linter: each layer imports only downward).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The checks above, the unit tests, then the integration tests on the real
# Mosquitto, Kafka and PostgreSQL (started for the run if not up, and
# stopped again after).
test: deps venv lint rules
	$(BIN)/pytest -q

# Prometheus alert rules for the pipeline's own processes: valid, and firing when they should
# (promtool comes with Debian's prometheus package), and the Alertmanager config compose runs
# (amtool: prometheus-alertmanager).
rules: deps
	promtool check config deploy/prometheus/prometheus.yml
	cd deploy/prometheus && promtool test rules alerts.test.yml
	amtool check-config deploy/alertmanager/alertmanager.yml

test-unit: venv
	$(BIN)/pytest -q tests/unit

# The long chaos run: 18 faults 20 s apart, edge links cut for 2 minutes.
# (`make test` runs a short seeded one.) SEED=n picks another schedule.
SEED ?= 1
chaos: deps venv
	$(BIN)/python -m tests.chaos.harness --seed $(SEED) --faults 18 --gap 20 --link-cut 120

# The soak run (about 2 hours; not in `make test`): the rebalance-mid-batch
# tests 10 times, the backlog run (a loaded box, Kafka killed mid-drain) 3
# times, the failover test 30 times, the short chaos run on 10 seeds and the
# cluster run (Kafka nodes killed and frozen, a bridge killed) on 10 seeds, a
# line per run and a summary.
soak: deps venv
	$(BIN)/python -m tests.soak --rebalance 10 --backlog 3 --scale-out 30 --chaos 10 --cluster 10

demo: deps venv
	$(BIN)/python -m devtools demo

compose-check:
	docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.yml -f docker-compose.cluster.yml config -q

# docker-compose.yml run for real in containers (part of `make test` too):
# starts dockerd if none runs, builds the images (cached by the engine).
compose-test: deps venv
	$(BIN)/pytest -q -s tests/compose

clean:
	-$(BIN)/python -m devtools services down
	rm -rf $(VENV) .services *.egg-info
