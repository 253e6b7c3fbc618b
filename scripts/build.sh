#!/bin/bash
# Installs the dependencies (Debian 12) and builds vtpm-hook into ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# Debian's flags (hardening included), as the package's own build has them: the package test
# packs this build (scripts/package.sh --prebuilt build) instead of compiling again.
# (on the command line, not in the environment, so that an existing build directory takes
# them too; CPPFLAGS join CXXFLAGS, as debhelper does it for CMake)
eval "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
# not -ffile-prefix-map (reproducible paths, not hardening): the tests find their data
# through __FILE__, which it would make relative to a directory ctest does not run in
CXXFLAGS=$(sed -E 's/(^| )-ffile-prefix-map=[^ ]*//g' <<<"$CXXFLAGS")
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$CPPFLAGS $CXXFLAGS" \
      -DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$LDFLAGS" \
      -DCMAKE_MODULE_LINKER_FLAGS="$LDFLAGS" >/dev/null
cmake --build build -j"$(nproc)"
