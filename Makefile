# gadms: `make demo` (install, then the offline end-to-end quickstart) and `make test`.
# Both create .venv if missing and install the project into it from this repo's own files.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.gadms-installed
TEST_STAMP := $(VENV)/.gadms-test-installed

.PHONY: install install-test demo test test-fast bench docs clean

# The demo needs the package only; the test extras (pytest, Playwright's driver) come with `make test`.
install: $(STAMP)

# tools/install.py installs with uv (about 4x faster than pip), handing it pip's indexes,
# find-links and constraints, and falls back to pip; GADMS_INSTALLER=pip skips uv.
$(STAMP): pyproject.toml tools/install.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python tools/install.py -e .
	touch $(STAMP)

install-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python tools/install.py -e '.[test]'
	touch $(TEST_STAMP)

demo: install
	$(BIN)/gadms quickstart

test: install-test
	$(BIN)/python -m pytest -q

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not slow"

# CPU benchmarks that print figures (the ablation and the GPU script are run on their own).
BENCHES := synth_speed read_annotations eval_metrics train_step retrieve
bench: install
	for name in $(BENCHES); do echo "== benchmarks/$$name.py"; $(BIN)/python benchmarks/$$name.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

docs: install
	$(BIN)/typer gadms_cli.cli utils docs --name gadms --title "gadms command line reference" --output docs/cli.md
	$(BIN)/python -c "import json; from gadms_cli.recipe import recipe_json_schema; open('docs/recipe-schema.json', 'w').write(json.dumps(recipe_json_schema(), indent=1) + '\n')"
