#!/bin/bash
# tests/install/run_install_test.sh BUILD_DIR [SANITIZERS] -- the install test
# (ctest "install").
#
# Installs the build in BUILD_DIR into a temporary prefix, then builds and
# runs tests/install/consumer.c against that prefix twice: with
# `pkg-config --cflags --libs deepdefense` and through a CMake project that
# calls find_package(deepdefense). SANITIZERS is the build's DD_SANITIZE
# value: a sanitized library needs a sanitized program (the ASan runtime
# must come first). The temporary directory is removed on exit.
set -euo pipefail

build_dir=$(cd "${1:?usage: run_install_test.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dd-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
san_flags=""
if [ -n "${2:-}" ]; then
    san_flags="-fsanitize=$2 -fno-omit-frame-pointer"
fi

echo "== cmake --install into $prefix"
cmake --install "$build_dir" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }

libdir=$(dirname "$(find "$prefix" -name 'libdeepdefense.so' -print -quit)")
[ -d "$libdir" ] || { echo "libdeepdefense.so not installed"; exit 1; }
[ -f "$prefix/include/deepdefense/deepdefense.h" ] || { echo "headers not installed"; exit 1; }
[ -f "$prefix/include/deepdefense/version.h" ] || { echo "generated version.h not installed"; exit 1; }

echo "== pkg-config consumer"
export PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
flags=$(pkg-config --cflags --libs deepdefense)
echo "pkg-config: $flags"
# shellcheck disable=SC2086  # the flags are meant to be split
"${CC:-cc}" -std=c11 -Wall -Wextra -Werror -Wpedantic $san_flags -o "$tmp/consumer_pc" \
    "$here/consumer.c" $flags -lm
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/consumer_pc"

echo "== find_package consumer"
cmake -S "$here" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$san_flags" \
      >"$tmp/configure.log" || { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/cmake-build" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/cmake-build/consumer"

# libdeepdefense_mpi, when the build has it: pkg-config deepdefense-mpi and
# find_package(deepdefense COMPONENTS mpi), each run as a single rank.
if [ -n "$(find "$prefix" -name 'libdeepdefense_mpi.so' -print -quit)" ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    echo "== pkg-config deepdefense-mpi consumer"
    flags=$(pkg-config --cflags --libs deepdefense-mpi)
    echo "pkg-config: $flags"
    # shellcheck disable=SC2086
    "${CC:-cc}" -std=c11 -Wall -Wextra -Werror $san_flags -o "$tmp/consumer_mpi_pc" \
        "$here/consumer_mpi.c" $flags
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/consumer_mpi_pc"
    echo "== find_package(deepdefense COMPONENTS mpi) consumer"
    cmake -S "$here" -B "$tmp/cmake-mpi" -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_MPI=ON \
          -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$san_flags" \
          >"$tmp/configure-mpi.log" || { cat "$tmp/configure-mpi.log"; exit 1; }
    cmake --build "$tmp/cmake-mpi" >"$tmp/build-mpi.log" || { cat "$tmp/build-mpi.log"; exit 1; }
    LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/cmake-mpi/consumer_mpi"
fi

echo "install test passed"
