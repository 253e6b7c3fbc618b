#!/bin/bash
# bench/run.sh - vtpm-hook vs swtpm 0.7.1, side by side in one boot of the test VM
# (tests/vm/run-vm.sh: Debian's kernel with tpm_vtpm_proxy under QEMU/TCG), plus the
# libtpms floor. Builds what is missing, runs everything, writes docs/benchmarks.md.
#
#   bench/run.sh [--quick]        --quick: few repetitions (a smoke test, ~2 min in the VM)
#
# Environment: BUILD_DIR (build), BENCH_BIN (/tmp/bench-bin: the binaries are copied there
# first, so a rebuild during the run does not change what is measured), VTPM_HOOK (use this
# binary instead of BUILD_DIR/vtpm-hook), FLOOR (likewise for bench/libtpms_floor: with both,
# nothing is built), OUT (docs/benchmarks.md), TIMEOUT (VM, 1200 s; the
# guest part is bounded by TIMEOUT - 60 s), BENCH_ONLY (step,...:
# run only those vmbench.py steps and write no report, to debug a step; raw results in
# BENCH_BIN/result.json), BENCH_SCALE (live vTPMs in bench_scale, 200; for 1000 give the VM
# more memory and time: MEM=6144 TIMEOUT=2400 BENCH_ONLY=bench_scale).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
BIN=${BENCH_BIN:-/tmp/bench-bin}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
QUICK=()
[ "${1:-}" = --quick ] && QUICK=(--quick)
ONLY=()
[ -n "${BENCH_ONLY:-}" ] && ONLY=("--only=$BENCH_ONLY")
[ -n "${BENCH_SCALE:-}" ] && ONLY+=("--scale=$BENCH_SCALE")

targets=()
[ -n "${FLOOR:-}" ] || targets+=(libtpms_floor)
[ -n "${VTPM_HOOK:-}" ] || targets+=(vtpm-hook)
if [ ${#targets[@]} -gt 0 ]; then
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVTPM_BENCH=ON >/dev/null
    fi
    grep -q '^VTPM_BENCH:BOOL=ON' "$BUILD/CMakeCache.txt" || cmake -S "$ROOT" -B "$BUILD" -DVTPM_BENCH=ON >/dev/null
    cmake --build "$BUILD" --target "${targets[@]}" -- -j"$(nproc)" >&2
fi

mkdir -p "$BIN"
install -m 755 "${VTPM_HOOK:-$BUILD/vtpm-hook}" "$BIN/vtpm-hook"
install -m 755 "${FLOOR:-$BUILD/bench/libtpms_floor}" "$BIN/libtpms_floor"
install -m 644 "$ROOT/bench/vmbench.py" "$BIN/vmbench.py"
install -m 644 "$ROOT/bench/memprofile.py" "$BIN/memprofile.py"
install -m 755 "$ROOT/bench/swtpm-hook.sh" "$BIN/swtpm-hook.sh"
install -m 644 "$ROOT/tests/lib/tpm2cmd.py" "$BIN/tpm2cmd.py"

log=$BIN/vm-output.txt
echo "bench: booting the VM (output also in $log)" >&2
set +e
TIMEOUT=${TIMEOUT:-1200}
TIMEOUT=$TIMEOUT "$ROOT/tests/vm/run-vm.sh" -f "$ROOT/bench/vm-guest.sh" "$BIN" $((TIMEOUT - 60)) "${QUICK[@]}" "${ONLY[@]}" 2>&1 | tee "$log" | grep --line-buffered -v '^BENCH-RESULT ' >&2
rc=${PIPESTATUS[0]}
set -e
grep '^BENCH-RESULT ' "$log" | tail -n 1 | cut -d' ' -f2- > "$BIN/result.json"
if [ ! -s "$BIN/result.json" ]; then
    echo "bench: the VM run failed (status $rc) before it reported; nothing written" >&2
    exit 1
fi
if [ -n "${BENCH_ONLY:-}" ]; then
    echo "bench: BENCH_ONLY=$BENCH_ONLY: no report; raw results in $BIN/result.json" >&2
    exit "$rc"
fi
# A failed step is marked in the report; the others' figures are still worth writing.
[ "$rc" = 0 ] || echo "bench: some steps failed (status $rc); see the report's notes" >&2
cmd="bench/run.sh${QUICK:+ --quick}"
python3 "$ROOT/bench/report.py" "$BIN/result.json" "$cmd" "$("$BIN/vtpm-hook" --version 2>/dev/null)" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "bench: wrote $OUT (raw results: $BIN/result.json)" >&2
