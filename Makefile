# Two commands matter: `make demo` and `make test`.  Both create the local
# virtualenv (.venv) from pyproject.toml when it is missing or out of date.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Debian packages the tests drive as independent peers.
APT_PACKAGES := openssl ca-certificates util-linux etcd-server etcd-client
PYTEST_ARGS ?=

.PHONY: venv system-deps demo lint test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,lint]'
	touch $@

venv: $(STAMP)

# Installs the Debian packages the tests use, when missing (needs root and apt).
# A policy-rc.d that says no (kept if the machine has one, else made for the
# install and removed) stops etcd-server's postinst from starting a system etcd.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; guard=1; \
	  fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  rc=$$?; if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
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
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .ruff_cache
