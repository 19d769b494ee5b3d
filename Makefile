# meterd: the two commands a newcomer types are `make run` and `make test`.
# Both install missing Debian packages first (scripts/deps.sh), then build.

BUILD      ?= build
ASAN_BUILD ?= build-asan
CONFIG     ?= config/meterd.yaml
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps deps-test build build-asan run test test-unit test-long clean bench-parse

all: build

deps:
	@sh scripts/deps.sh build

deps-test:
	@sh scripts/deps.sh test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DMD_WERROR=ON

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The sanitizer build: clang with AddressSanitizer + UndefinedBehaviorSanitizer,
# plus the libFuzzer targets.
$(ASAN_BUILD)/CMakeCache.txt:
	CC=clang cmake -S . -B $(ASAN_BUILD) -DMD_WERROR=ON -DCMAKE_BUILD_TYPE=Debug \
	    -DMD_SANITIZE=address,undefined -DMD_FUZZ=ON

build-asan: deps-test $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# Runs meterd (and the ExtProc simulator it scrapes) on the default config.
run: build
	@sh scripts/run.sh $(BUILD) $(CONFIG)

# Unit, integration and fuzz-smoke tests, in the normal build and again in
# the sanitizer build.
test: deps-test
	@sh scripts/test.sh $(BUILD) $(ASAN_BUILD)

# The long reliability scenarios (tests/reliability/test_long_*.py: 1,000
# kill -9 points, ...), in the normal build only; figures in RELIABILITY.md.
test-long: build
	cd $(BUILD) && ctest -L long --output-on-failure --timeout 7200

test-unit: build
	cd $(BUILD) && ctest -L unit --output-on-failure

# Parser throughput (issue 3); results go to bench/RESULTS.md by hand.
bench-parse:
	@sh bench/parse/run.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
