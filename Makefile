# Two commands do all set-up on a fresh machine with Python 3.11, pip, make and bash:
#   make demo   set up .venv and run the main job on the synthetic cohort (offline)
#   make test   set up .venv and run the test suite (what CI runs)
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= outputs
# The read-only course assets (offline ImageNet weights, ten IXI heads): ../shared beside the
# checkout, else /work/shared (this project's build machines). Without them the notebooks still
# run, and say that the ImageNet arm starts from random weights.
SLICELIB_SHARED ?= $(firstword $(wildcard $(abspath ../shared) /work/shared))
export SLICELIB_SHARED

.PHONY: setup test demo lint bench clean notebooks wheel badges student site site-check

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,notebooks,bench]"
	touch $@

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/slicelib course --preset cpu --out $(OUT)/course

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) $(OUT)

wheel: setup
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation -w dist .

notebooks: setup
	$(BIN)/jupytext --to ipynb notebooks/0*.py

# Rewrite every Colab/Binder badge from [project.urls] Repository in pyproject.toml (the .py
# sources and their paired .ipynb alike: only the links change, so each .ipynb stays what
# jupytext makes of its .py, and the cell ids are kept); prints the files it changed.
badges: setup
	$(BIN)/python -c "from slicelib.course import write_badges; print(*write_badges('.'), sep='\n')"

# Student notebooks: every exercise's solution removed (cells tagged "solution"; see
# slicelib/exercises.py), written to $(OUT)/student/*.ipynb.
student: setup
	$(BIN)/python -c "from slicelib.course import notebook_sources, write_student_notebooks as w; print(*w(notebook_sources(), '$(OUT)/student'), sep='\n')"

# The course site: the README, docs/ and the executed notebooks of $(OUT)/course (make demo, or
# slicelib course --preset smoke --out $(OUT)/course for a quick look) rendered, never re-run, by
# Sphinx + myst-nb into $(OUT)/site/html. site-check opens every page in headless Chromium
# (Debian's: apt-get install chromium) and writes a screenshot per page to $(OUT)/site-check.
site: $(VENV)/.site-installed
	$(BIN)/python docs/site/build.py --notebooks $(OUT)/course --out $(OUT)/site

site-check: $(VENV)/.site-installed
	$(BIN)/python scripts/check_site.py --site $(OUT)/site/html --out $(OUT)/site-check

$(VENV)/.site-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[site]"
	touch $@
