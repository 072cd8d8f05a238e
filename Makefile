# Two commands matter: `make demo` and `make test`.  Both create the local
# virtualenv (.venv) from pyproject.toml when it is missing or out of date.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests drive as independent peers: etcd-server and
# etcd-client (the kubeadm profile's etcd certificates), docker.io (it brings
# containerd, runc and tini) and busybox-static (real container runtimes for
# the kubelet.removed tests, started by the tests themselves), chromium (renders
# check_expiration's HTML report headless in its test).
APT_PACKAGES := openssl ca-certificates util-linux etcd-server etcd-client docker.io busybox-static chromium
# Two workers, a test file each (tests of one file share module fixtures and
# run in order): much of the suite waits on daemons and subprocesses.  A short
# --basetemp: the tests' salt daemons put unix sockets under it (108-byte limit).
PYTEST_ARGS ?= -n 2 --dist loadfile --basetemp=/tmp/kf-pytest --durations=25

.PHONY: venv system-deps demo lint test bench clean

# The venv gets the formula's dependencies and tools, not the formula itself:
# installed, its salt.loader entry point would hand every Salt in the venv the
# modules, and the tests could no longer check the ways the README installs it
# (sync from file_roots, *_dirs).  The tests load it from the checkout;
# tests/integration/test_packaging.py installs it into a venv of its own.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,lint]'
	$(BIN)/pip uninstall -q -y --disable-pip-version-check kubernetes-formula
	touch $@

venv: $(STAMP)

# Installs the Debian packages the tests use, when missing (needs root and apt).
# A policy-rc.d that denies every start is in place while apt runs, so that
# installing docker.io or etcd-server starts no daemon (one already there is kept).
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  policy=/usr/sbin/policy-rc.d; made=; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy; chmod 755 $$policy; made=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  rc=$$?; if [ -n "$$made" ]; then rm -f $$policy; fi; exit $$rc; \
	fi

demo: $(STAMP)
	$(PY) tools/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@sls=$$(find kubernetes -name '*.sls' 2>/dev/null); if [ -n "$$sls" ]; then $(BIN)/salt-lint $$sls; fi
	$(BIN)/yamllint -s pillar.example

test: $(STAMP) system-deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .ruff_cache
