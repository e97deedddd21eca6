# ptelab - the two commands of the README, and the rest.
#   make demo      build, then run the main job on the embedded default machine
#   make check     build, then run every test
# Each target installs the Debian packages it needs when they are missing (tools/deps.sh).

BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX     ?= /usr/local
CMAKE_ARGS ?=
DEPS_BUILD  = cmake gcc make pkg-config libedit-dev liblua5.4-dev
DEPS_TEST   = libcmocka-dev

.PHONY: all build demo check install clean deps-build deps-test format check-asan \
        check-valgrind check-paranoid fuzz

all: build

deps-build:
	@sh tools/deps.sh $(DEPS_BUILD)

deps-test:
	@sh tools/deps.sh $(DEPS_TEST)

build: deps-build deps-test
	@cmake -S . -B $(BUILD) -DPTELAB_WERROR=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@$(BUILD)/ptelab demo

check: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer (software MMU).
check-asan: deps-build deps-test
	@cmake -S . -B build-asan -DPTELAB_WERROR=ON -DPTELAB_SANITIZE=ON \
	    -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

# Debug build of the suite with ptl_check before every operation (every 64th in the few
# tests that run tens of thousands of operations), each held to the full walk
# (ptl_check_full): slow, thorough.
check-paranoid: deps-build deps-test
	@cmake -S . -B build-paranoid -DPTELAB_WERROR=ON -DPTELAB_PARANOID=ON \
	    -DCMAKE_BUILD_TYPE=Debug $(CMAKE_ARGS) >/dev/null
	@cmake --build build-paranoid -j $(JOBS)
	@cd build-paranoid && ctest --output-on-failure -j $(JOBS) -E browser-report

# The whole suite under valgrind memcheck: 0 errors, 0 leaks, or it fails.
check-valgrind: deps-build deps-test
	@sh tools/deps.sh valgrind
	@cmake -S . -B build-valgrind -DPTELAB_WERROR=ON -DCMAKE_BUILD_TYPE=Debug \
	    $(CMAKE_ARGS) >/dev/null
	@cmake --build build-valgrind -j $(JOBS)
	@sh tools/valgrind-suite.sh build-valgrind

# libFuzzer targets under ASan+UBSan, each for FUZZ_SECONDS (tools/fuzz.sh); FUZZ_TARGETS
# names some (default all four), FUZZ_RUNS=N also stops each after N executions.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_RUNS    ?=
fuzz: deps-build deps-test
	@sh tools/deps.sh clang libclang-rt-14-dev
	@CC=clang cmake -S . -B build-fuzz -DPTELAB_FUZZ=ON -DPTELAB_SANITIZE=ON -DPTELAB_TESTS=OFF \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@FUZZ_RUNS=$(FUZZ_RUNS) sh tools/fuzz.sh build-fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

format:
	@clang-format -i include/ptelab/*.h src/*.c src/*.h tools/*.c tests/*.c

clean:
	@rm -rf $(BUILD)

# The performance issue's benchmark: a Release (-O2) build in build-bench, then its table
# (docs/performance.md). BENCH_ARGS=--quick for a short run.
BENCH_ARGS ?=
.PHONY: bench
bench: deps-build
	@cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" \
	    -DPTELAB_TESTS=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build build-bench -j $(JOBS) --target ptelab-bench
	@build-bench/bench/ptelab-bench $(BENCH_ARGS)
