# pgjobs — PGXS build of the extension, plus the project's own targets.
EXTENSION  = pgjobs
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
SOURCES    = $(sort $(wildcard sql/src/*.sql))
CURRENT    = sql/$(EXTENSION)--$(EXTVERSION).sql
# The upgrade into the version being developed, built from its source in sql/upgrades
# (released ones are frozen: only this one is ever rebuilt).
UPGRADE_IN = $(wildcard sql/upgrades/$(EXTENSION)--*--$(EXTVERSION).sql.in)
UPGRADE    = $(patsubst sql/upgrades/%.in,sql/%,$(UPGRADE_IN))
DATA       = $(sort $(wildcard sql/$(EXTENSION)--*.sql) $(CURRENT) $(UPGRADE))
EXTRA_CLEAN =

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

all: $(CURRENT) $(UPGRADE)

# The versioned script is the sources concatenated in file-name order.
$(CURRENT): $(SOURCES) $(EXTENSION).control
	@{ echo "-- pgjobs $(EXTVERSION): generated from sql/src by make; do not edit."; \
	   for f in $(SOURCES); do echo; echo "-- $$f"; cat $$f; done; \
	   echo; echo "-- The version of the app_jobs objects, for installs without CREATE EXTENSION."; \
	   echo "CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text"; \
	   echo "LANGUAGE sql IMMUTABLE"; \
	   echo "AS \$$\$$ SELECT '$(EXTVERSION)'::text \$$\$$;"; } > $@

$(UPGRADE): $(UPGRADE_IN) $(SOURCES) scripts/build_upgrade.py
	python3 scripts/build_upgrade.py $(UPGRADE_IN) > $@.tmp && mv $@.tmp $@

install: $(CURRENT) $(UPGRADE)

.PHONY: installdb test demo bench bench-quick lint venv verify dist screenshots

# Create (or update) the extension in the database named by DATABASE_URL or PG*.
installdb:
	psql $(DATABASE_URL) -v ON_ERROR_STOP=1 -X -q \
	  -c "CREATE EXTENSION IF NOT EXISTS $(EXTENSION)" \
	  -c "ALTER EXTENSION $(EXTENSION) UPDATE"

# Every test: lint, pgTAP, pytest, on a throwaway cluster.
test:
	bash scripts/run-tests.sh

# The main job on an embedded throwaway cluster (or DATABASE_URL): see scripts/demo.sh.
demo:
	bash scripts/demo.sh

# Benchmarks on a throwaway cluster with default durability: see scripts/bench.sh.
bench:
	bash scripts/bench.sh

bench-quick:
	bash scripts/bench.sh --quick

# doc/images/overview.png and job.png from the dashboard's browser test.
screenshots:
	bash scripts/screenshots.sh

lint: venv
	.venv/bin/sqlfluff lint sql/src $(wildcard sql/$(EXTENSION)--*--*.sql)
	.venv/bin/ruff check python tests_py scripts bench

venv:
	bash scripts/bootstrap.sh

# Fail when a committed file is not what it must be: generated SQL and test data stale,
# a released upgrade script changed since its tag, versions that disagree with
# pgjobs.control (scripts/verify.py says what each check covers).
verify: venv
	.venv/bin/python scripts/verify.py

# The release files in dist/: the PGXN archive (committed files of HEAD: what
# `make && make install` needs, with the generated scripts, so no Python is needed to
# install) and the Python sdist and wheel.
DIST_FILES = META.json $(EXTENSION).control Makefile README.md CHANGELOG.md sql \
             scripts/build_upgrade.py $(wildcard LICENSE doc)
dist: verify
	@git diff --quiet HEAD -- $(DIST_FILES) || echo "dist: uncommitted changes are not in the archive"
	mkdir -p dist
	git archive --format=zip --prefix=$(EXTENSION)-$(EXTVERSION)/ \
	  -o dist/$(EXTENSION)-$(EXTVERSION).zip HEAD $(DIST_FILES)
	.venv/bin/python -m build --outdir dist .
