# The README's two commands: `make run` starts the whole system, `make test` runs every test.
# Both install what is missing first (scripts/setup.sh, as root on Debian 12).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all setup build run test clean distclean

all: build

setup:
	@scripts/setup.sh

# Release-like build with symbols, for `make run` and the benchmarks.
build: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j$(JOBS)

# PostgreSQL, Redis and the five daemons in the foreground; Ctrl-C stops them all.
run: build
	QUAVER_BUILD=$(BUILD) scripts/run.sh

# ASan+UBSan build, ctest (selftests), then the integration tests against those binaries.
test: setup
	ASAN_BUILD=$(ASAN_BUILD) JOBS=$(JOBS) scripts/test.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# Also forgets the data `make run` keeps under ./var (database, Redis, audio, JWT secret).
distclean: clean
	rm -rf var
