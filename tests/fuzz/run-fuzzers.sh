#!/bin/bash
# Builds the libFuzzer targets with clang (-DVTPM_FUZZ=ON, ASan + UBSan) in a build dir of
# their own and runs each one for a bounded time on a copy of the committed seed corpus.
#
#   tests/fuzz/run-fuzzers.sh [target...]       (default: every target)
#
# Targets: fuzz_oci_input, fuzz_command_path (a TPM 2) and fuzz_command_path_tpm12 (the same
# binary with VTPM_FUZZ_TPM_VERSION=1.2, seeded from the same corpus).
#
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_BUILD_DIR (default <repo>/build-fuzz).
# Crash inputs are kept in <build>/fuzz-artifacts/<target>/. Prints the executions run per
# target; exits non-zero when a target crashed, leaked, timed out, ran out of memory or ran no
# input at all.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$repo/build-fuzz}
secs=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_oci_input fuzz_command_path fuzz_command_path_tpm12)
binary_of() { [ "$1" = fuzz_command_path_tpm12 ] && echo fuzz_command_path || echo "$1"; }
binaries=()
for t in "${targets[@]}"; do binaries+=("$(binary_of "$t")"); done

# shellcheck source=../lib/harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/harness.sh"
die() { fatal "run-fuzzers: $*"; }
command -v clang++ >/dev/null || die "clang++ is not installed (apt-get install clang libclang-rt-14-dev)"
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || die "FUZZ_SECONDS must be a positive integer"

echo "== configuring $build (clang, VTPM_FUZZ=ON)"
mkdir -p "$build"
work_log=$build/configure.log
# The fuzz build is about crashes, not about clang's opinion of warnings gcc does not give.
CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -G Ninja -DVTPM_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVTPM_WERROR=OFF >"$work_log" 2>&1 ||
  { cat "$work_log"; die "cmake configure failed"; }
grep -q "^CMAKE_CXX_COMPILER:.*clang" "$build/CMakeCache.txt" ||
  die "$build was configured with another compiler; remove it"
echo "== building $(printf "%s\n" "${binaries[@]}" | sort -u | tr "\n" " ")"
# (the binaries, once each; the targets stay as given: fuzz_command_path_tpm12 shares a binary)
mapfile -t build_targets < <(printf '%s\n' "${binaries[@]}" | sort -u)
cmake --build "$build" --target "${build_targets[@]}" || die "build failed"

work=$(mktemp -d /tmp/vtpm-fuzz-run.XXXXXX)
at_exit 'rm -rf "$work"'
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

summary=()
for t in "${targets[@]}"; do
  b=$(binary_of "$t")
  bin=$build/tests/fuzz/$b
  [ -x "$bin" ] || die "no fuzz target $bin"
  corpus=$work/corpus/$t
  mkdir -p "$corpus"
  [ -d "$here/corpus/$b" ] && cp -r "$here/corpus/$b/." "$corpus/"
  tpm_version=2
  [ "$t" = fuzz_command_path_tpm12 ] && tpm_version=1.2
  artifacts=$build/fuzz-artifacts/$t
  mkdir -p "$artifacts"
  log=$build/fuzz-$t.log
  echo "== fuzzing $t for ${secs}s ($(ls "$corpus" | wc -l) seeds; log $log)"
  # The outer timeout only guards against a hung fuzzer; -max_total_time is the real bound.
  VTPM_FUZZ_TPM_VERSION=$tpm_version timeout --kill-after=10 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout=10 \
    -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$corpus" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  execs=${execs:-?}
  if [ $rc -ne 0 ] || grep -q -e '^==[0-9]*==ERROR' -e 'runtime error:' -e 'invariant violated' \
      -e 'deadly signal' "$log"; then
    fail "$t" "exit $rc after $execs executions; last lines of $log:"
    grep -v -e '^#[0-9]' "$log" | tail -40
    ls "$artifacts" | sed 's/^/  artifact: /'
    summary+=("$t: FAIL, $execs executions")
  elif ! [[ $execs =~ ^[0-9]+$ ]] || [ "$execs" -eq 0 ]; then
    # no input run (a fuzzer that exits at once, a changed stats line): nothing was fuzzed
    fail "$t" "no executions counted (number_of_executed_units: $execs); last lines of $log:"
    grep -v -e '^#[0-9]' "$log" | tail -20
    summary+=("$t: FAIL, no executions")
  else
    pass "$t: $execs executions in ${secs}s"
    summary+=("$t: $execs executions")
  fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
finish
