# cdnctl — the two commands a newcomer needs: `make lab` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

# Debian packages the tests, the lab and the benchmarks run for real (nothing mocked).
DEB_PACKAGES := git nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson \
                libnginx-mod-http-brotli-filter libnginx-mod-http-brotli-static wrk \
                podman runc debootstrap valgrind pebble prometheus gdnsd

.PHONY: help setup deb-packages test lint unit image molecule lab lab-status lab-down lab-test \
        preview bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: deb-packages $(STAMP)  ## Install Debian packages and the Python venv (idempotent)

deb-packages:  ## Install the Debian packages the tests need (only the missing ones)
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

lint: setup  ## ruff + yamllint
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/yamllint -s .
	$(BIN)/cdnctl schema --check
	$(BIN)/cdnctl validate tenants
	$(BIN)/ansible-lint

unit: setup  ## pytest, all but the lab's tests (make lab-test)
	$(BIN)/pytest -m "not lab"

image: deb-packages  ## Build the Molecule base image (only if missing)
	CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf molecule/image/build.sh

# Scenarios run one after the other (edge, then dns_tls): 2 cores, several containers each.
MOLECULE_SCENARIOS := edge dns_tls

# podman as it works here: runc + cgroupfs, no raised ulimits (molecule/containers.conf).
molecule: setup image  ## Molecule scenarios on podman (systemd containers)
	for scenario in $(MOLECULE_SCENARIOS); do \
	  CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf PATH="$(CURDIR)/$(BIN):$$PATH" \
	    $(BIN)/molecule -c molecule/base.yml test -s $$scenario || exit 1; \
	done

test: setup lint molecule unit lab-test  ## Lint, Molecule, pytest, then the lab's tests (what CI runs)

lab: setup image  ## Bring up the multi-region lab (podman; a second run skips what did not change)
	CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/cdnctl lab up

lab-status: setup  ## The lab's containers: role, address, state
	CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf $(BIN)/cdnctl lab status

lab-down: setup  ## Remove the lab (containers, network, inventory, its certificates)
	CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/cdnctl lab down

# Every test using the shared lab (tests/lab/conftest.py `fleet_lab`): one lab up for all of
# them, taken down at the end when this run brought it up (about 10 min on 2 cores).
lab-test: setup image  ## The tests that run against the multi-region lab (part of make test)
	CONTAINERS_CONF=$(CURDIR)/molecule/containers.conf PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/pytest -m lab -s

preview: setup  ## One local edge + the sample origins, applying tenants/ edits live
	$(BIN)/cdnctl lab

bench: setup  ## Run the benchmarks (print JSON)
	$(BIN)/python bench/tenant_scale.py
	$(BIN)/python bench/dataplane.py
	$(BIN)/python bench/hit_instructions.py
	$(BIN)/python bench/metrics_scale.py
	$(BIN)/python bench/zone_scale.py
	$(BIN)/python bench/sync_scale.py

clean:  ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .cdnctl-cache
