# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# Quix Streams needs an older confluent-kafka than the project pins: its own virtualenv.
QUIX_VENV := .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed

.PHONY: run cluster test lint typecheck contracts unit bench clean system-deps soak soak-cluster quix-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[fast]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[fast,test]'
	touch $(TEST_STAMP)

## run: start a broker on 127.0.0.1:9092 with data in ./data
run: $(STAMP)
	$(BIN)/odradek serve --host 127.0.0.1 --port 9092 --data-dir ./data

## cluster: a controller and three brokers on 127.0.0.1 (free ports), data in ./cluster-data
cluster: $(STAMP)
	$(BIN)/odradek cluster up --brokers 3 --data-dir ./cluster-data

## soak-cluster: the checker on a 3-broker cluster, 10 minutes of faults per run (see README)
soak-cluster: $(STAMP)
	$(BIN)/odradek check --brokers 3 --guarantee at-least-once --acks 1,all --fsync on \
		--duration 600 --fault-free 10 --seed 5 --json soak-cluster.json \
		--html soak-cluster.html --workdir ./soak-cluster

## system-deps: Debian packages the tests use (kcat, PostgreSQL); needs root, skipped otherwise
system-deps:
	@if ! command -v kcat >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null) \
			|| echo "warning: could not install kcat; kcat tests will be skipped"; \
		else \
			echo "warning: kcat is not installed and this is not root; kcat tests will be skipped"; \
		fi; \
	fi
	@# The toolkit's PostgreSQL tests start their own server from these binaries (initdb, pg_ctl).
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
			|| echo "warning: could not install postgresql; PostgreSQL sink tests will be skipped"; \
		else \
			echo "warning: PostgreSQL is not installed and this is not root; PostgreSQL sink tests will be skipped"; \
		fi; \
	fi

## quix-venv: Quix Streams in its own virtualenv (.venv-quix) for the cluster test that runs a
## Quix application; a failed install only warns (that test then skips, saying why)
quix-venv:
	@if [ ! -f $(QUIX_STAMP) ]; then \
		($(PYTHON) -m venv $(QUIX_VENV) \
			&& $(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip \
			&& $(QUIX_VENV)/bin/python -m pip install --quiet 'quixstreams>=3.14,<4' \
			&& touch $(QUIX_STAMP)) \
		|| echo "warning: could not build $(QUIX_VENV); the Quix Streams test will be skipped"; \
	fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

contracts: $(TEST_STAMP)
	$(BIN)/lint-imports

unit: $(TEST_STAMP) system-deps quix-venv
	$(BIN)/pytest -m "not soak"

## soak: the long sweeps and kill schedules `make test` leaves out (tests marked soak)
soak: $(TEST_STAMP) system-deps quix-venv
	$(BIN)/pytest -m soak

## test: install what the tests need, then lint, types, import contracts and the whole suite
test: lint typecheck contracts unit

bench: $(STAMP)
	$(BIN)/python benchmarks/produce_bench.py

clean:
	rm -rf $(VENV) $(QUIX_VENV) build dist src/*.egg-info
