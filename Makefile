# pgjobs — PGXS build of the extension, plus the project's own targets.
EXTENSION  = pgjobs
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)
SOURCES    = $(sort $(wildcard sql/src/*.sql))
CURRENT    = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA       = $(sort $(wildcard sql/$(EXTENSION)--*.sql) $(CURRENT))
EXTRA_CLEAN =

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

all: $(CURRENT)

# The versioned script is the sources concatenated in file-name order.
$(CURRENT): $(SOURCES) $(EXTENSION).control
	@{ echo "-- pgjobs $(EXTVERSION): generated from sql/src by make; do not edit."; \
	   for f in $(SOURCES); do echo; echo "-- $$f"; cat $$f; done; \
	   echo; echo "-- The version of the app_jobs objects, for installs without CREATE EXTENSION."; \
	   echo "CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text"; \
	   echo "LANGUAGE sql IMMUTABLE"; \
	   echo "AS \$$\$$ SELECT '$(EXTVERSION)'::text \$$\$$;"; } > $@

install: $(CURRENT)

.PHONY: installdb test demo bench bench-quick lint venv check-generated screenshots

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

# Fail when the committed versioned script is not what the sources make.
check-generated:
	@tmp=$$(mktemp); cp $(CURRENT) $$tmp; rm -f $(CURRENT); $(MAKE) -s $(CURRENT); \
	  if cmp -s $$tmp $(CURRENT); then rm $$tmp; else \
	  echo "$(CURRENT) was stale and has been regenerated; commit it"; rm $$tmp; exit 1; fi
