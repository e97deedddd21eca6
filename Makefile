# ptelab - the two commands of the README, and the rest.
#   make demo      build, then run the main job on the embedded default machine
#   make check     build, then run every test
# Each target installs the Debian packages it needs when they are missing (tools/deps.sh).

BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX     ?= /usr/local
CMAKE_ARGS ?=
DEPS_BUILD  = cmake gcc make pkg-config
DEPS_TEST   = libcmocka-dev

.PHONY: all build demo check install clean deps-build deps-test format

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

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

format:
	@clang-format -i include/ptelab/*.h src/*.c src/*.h tools/*.c tests/*.c

clean:
	@rm -rf $(BUILD)
