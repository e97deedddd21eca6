#!/bin/sh
# Install ptelab into a scratch prefix and build the harness contract against it with
# pkg-config, exactly as a program outside the tree would, then run it.
#   run.sh BUILD_DIR SOURCE_DIR
# The contract is shared/contract/harness_contract.c beside the repository when it is
# there (CI), else the copy in tests/contract.
set -eu
build=$1
src=$2
prefix="$build/contract-prefix"
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
contract="$src/../shared/contract/harness_contract.c"
[ -f "$contract" ] || contract="$src/tests/contract/harness_contract.c"
libdir=$(ls -d "$prefix"/lib* | head -n 1)
export PKG_CONFIG_PATH="$libdir/pkgconfig"
${CC:-cc} -std=gnu11 ${CONTRACT_CFLAGS:-} "$contract" $(pkg-config --cflags --libs ptelab) \
    -o "$build/contract"
"$build/contract"
# the CMake package too
mkdir -p "$build/contract-cmake"
cat > "$build/contract-cmake/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.25)
project(contract C)
find_package(ptelab REQUIRED)
add_executable(contract $contract)
target_link_libraries(contract ptelab::ptelab)
CM
cmake -S "$build/contract-cmake" -B "$build/contract-cmake/b" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_C_FLAGS="${CONTRACT_CFLAGS:-}" >/dev/null
cmake --build "$build/contract-cmake/b" >/dev/null
"$build/contract-cmake/b/contract"
