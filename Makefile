# SaaSOdoo Runbooks. The two commands a new user needs:
#   make demo   build and start the local test bed, deploy the sample platform, break it, run
#               playbooks/platform_down.yml and show what it found and did
#   make test   everything: setup, lint, unit and integration tests (starts what it needs)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := $(CURDIR)/.cache/testbed
export KUBECONFIG := $(CACHE)/kubeconfig
export K8S_AUTH_KUBECONFIG := $(CACHE)/kubeconfig
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
PYTEST_ARGS ?=
# Test beds side by side for `make test` and `make integration` (tests/parallel.py; docs/testbed.md).
WORKERS ?= 2

.PHONY: help venv testbed-build testbed-up testbed-down testbed-status services-up services-down \
        platform platform-teardown lint unit integration bench molecule test demo clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 22

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "==> Python dependencies into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -r requirements.txt -r requirements-dev.txt
	@# Bytecode for everything but ansible_collections: ansible's collection loader compiles from source
	@# and never reads a .pyc, so pip's compiling of those 15,000 files only cost time (measured: 55 s -> 17 s + 15 s).
	$(BIN)/python -m compileall -q -j0 -x '/ansible_collections/' $(VENV)/lib
	touch $@

venv: $(VENV)/.installed ## Create the virtualenv with ansible-core, the collections and the test tools

testbed-build: ## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, cert-manager (cached per machine)
	testbed/build.sh

testbed-up: venv testbed-build services-up ## Start the control plane, PostgreSQL and Redis (no-op when up)
	$(PYTHON) testbed/cluster.py up

testbed-down: ## Stop everything the test beds and the tests started; leaves no stray process
	-$(PYTHON) tests/parallel.py --down
	-$(BIN)/python testbed/kwok_logs.py down
	-$(BIN)/python testbed/prometheus.py down
	-$(BIN)/python testbed/pgbouncer.py down
	-$(BIN)/python testbed/dns.py down
	-$(BIN)/python testbed/certmanager.py down
	$(MAKE) services-down
	$(PYTHON) testbed/cluster.py down

testbed-status: ## Show each test bed component
	-$(PYTHON) testbed/cluster.py status
	-bash testbed/services.sh status
	-$(BIN)/python testbed/endpoints.py status

services-up: venv ## Start the real PostgreSQL, Redis and HTTP(S) endpoints on loopback (installs what is missing)
	bash testbed/services.sh up
	$(BIN)/python testbed/endpoints.py up

services-down:
	-$(BIN)/python testbed/endpoints.py down
	bash testbed/services.sh down

platform: testbed-up ## Deploy the sample SaaSOdoo platform on the test bed
	$(BIN)/ansible-playbook playbooks/deploy_platform.yml

platform-teardown: ## Remove the sample platform from the test bed
	$(BIN)/ansible-playbook playbooks/teardown_platform.yml

lint: venv ## ansible-lint with the production profile
	$(BIN)/ansible-lint --profile production

unit: venv ## Unit tests (no test bed needed)
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

integration: venv testbed-build ## Integration tests on $(WORKERS) real test beds side by side (each deploys the sample platform once)
	$(BIN)/python tests/parallel.py --workers $(WORKERS) $(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))

bench: platform ## Time every runbook (check mode) on the test bed: wall and CPU seconds, a table and .cache/bench/runbook_bench.json
	$(BIN)/python bench/runbook_bench.py $(BENCH_ARGS)

molecule: testbed-up ## molecule test (converge, idempotence, verify) for every role that has a scenario
	@for scenario in roles/*/molecule/default; do \
	  role=$${scenario%/molecule/default}; echo "==> molecule test: $$role"; \
	  (cd $$role && PATH=$(CURDIR)/$(BIN):$$PATH molecule test) || exit 1; \
	done

test: ## Everything: setup, build, lint, unit, then integration and Molecule on $(WORKERS) beds; prints each phase's time
	$(PYTHON) tests/run_all.py --workers $(WORKERS)

demo: platform ## Break the sample platform and let platform_down.yml diagnose and heal it
	@echo "==> Injecting a fault: the backend pods crash-loop (CrashLoopBackOff, restart count growing)"
	$(BIN)/python testbed/faults.py inject crashloop backend
	@echo "==> The platform as an on-call engineer finds it"
	$(BIN)/python testbed/faults.py status
	@echo "==> ansible-playbook playbooks/platform_down.yml  (cooldown off so the demo can be repeated)"
	$(BIN)/ansible-playbook playbooks/platform_down.yml -e platform_down_cooldown_minutes=0
	@echo "==> After the runbook"
	$(BIN)/python testbed/faults.py status

clean: testbed-down ## Stop everything and delete the test bed's state (keeps the build cache)
	$(PYTHON) testbed/cluster.py reset
	rm -rf $(CACHE)/pg $(CACHE)/redis $(CACHE)/endpoints
