# Two set-up commands work on a fresh machine: `make up` and `make test`. Each bootstraps what it
# needs (Debian packages, .venv, pip packages) idempotently and quietly when already present.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Every tool a test uses: dcmtk (interop), chromium and nodejs (viewer), Orthanc with its DICOMweb plugin
# (a remote node in the interop tests, the peer of the benchmarks); gdcm's tools (an independent decoder in the
# codec tests, a peer of the codec benchmark); dicom3tools' dciodvfy (IOD checks of what the file tools
# write); jq and curl for the README's examples.
APT_PACKAGES := dcmtk libgdcm-tools dicom3tools chromium nodejs orthanc orthanc-dicomweb jq curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up test lint types unit integration interop bench bench-dicomweb bench-codecs bench-dimse bench-deid bench-catalog setup apt viewer synth clean

setup: apt $(STAMP) viewer

apt:
	@if ! dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -c '^install ok installed$$' \
	    | grep -qx $(words $(APT_PACKAGES)); then $(SUDO) bash tools/install_debs.sh $(APT_PACKAGES); fi

$(STAMP): pyproject.toml
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -c 'import pacs, gateway, functions, pynetdicom, fastapi, moto' 
	@touch $(STAMP)

# The OHIF viewer (prebuilt, from the npm registry) relocated to /viewer, and playwright-core for the
# browser test. npm ships inside nodesource's nodejs on these machines; Debian's npm only if missing.
viewer: apt $(STAMP)
	@command -v npm >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends npm >/dev/null; }
	@$(BIN)/python tools/install_viewer.py
	@[ -f tests/viewer/node_modules/playwright-core/package.json ] || \
	  (cd tests/viewer && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

up: setup
	$(BIN)/pacs up

# The same tree on the AWS adapters against moto's server (tools/moto_up.py creates the buckets, table,
# queues with DLQ, notification and bus); loopback only, so unregistered calling AEs are accepted.
.PHONY: up-aws
up-aws: setup
	PACS_REQUIRE_KNOWN_CALLERS=0 $(BIN)/python tools/moto_up.py -- $(BIN)/pacs up --backend aws --endpoint-url {endpoint}

lint: setup
	$(BIN)/ruff check .

types: setup
	$(BIN)/mypy layers/pacs gateway functions

# The tests run in parallel (pytest-xdist): TEST_WORKERS processes, one per CPU by default (`logical`: 2 on a
# 2-core machine even when psutil counts 1 physical core). tests/conftest.py keeps together what must share
# a worker (the viewer/Chromium tests; each module whose fixtures start `pacs up`, Orthanc or a synth once);
# `--dist loadgroup` spreads the rest test by test. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= logical
XDIST = -n $(TEST_WORKERS) --dist loadgroup

unit: setup
	$(BIN)/pytest -q $(XDIST) tests/unit

integration: setup
	$(BIN)/pytest -q $(XDIST) tests/integration

interop: setup
	$(BIN)/pytest -q $(XDIST) tests/interop

test: setup lint types
	$(BIN)/pytest -q -p no:cacheprovider $(XDIST) tests

bench: setup
	bash bench/run_store.sh

bench-dicomweb: setup
	bash bench/run_dicomweb.sh

bench-codecs: setup
	bash bench/run_codecs.sh

bench-dimse: setup
	bash bench/run_dimse.sh

bench-deid: setup
	bash bench/run_deid.sh

bench-catalog: $(STAMP)
	$(BIN)/python bench/catalog_scale.py

# The CDK app (infra/) synthesized offline into cdk.out/: no AWS credentials, no Docker (the layer is
# built with pip; the gateway image only by `cdk deploy`). Node (for jsii) comes from `apt`.
synth: apt $(STAMP)
	$(BIN)/python infra/app.py

clean:
	rm -rf $(VENV) pacs-data bench/out .build tests/viewer/node_modules tests/viewer/artifacts \
	  .pytest_cache .ruff_cache .mypy_cache
