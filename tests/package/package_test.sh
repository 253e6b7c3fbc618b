#!/bin/bash
# tests/package/package_test.sh - the Debian package, end to end: scripts/package.sh packs the
# suite's own build (compile once) as this version and as a higher one (the upgrade), lintian
# must report no error on the first, then one VM boot installs it with apt and runs package-tests.sh,
# cri-tests.sh (a Kubernetes node at containerd's CRI) and the upgrade/remove/purge part.
#
#   package_test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: package_test.sh BUILD_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$BUILD/dist
# the policy file the package ships is the one the docs write out
for doc in docs/install.md docs/configuration.md; do
    python3 - "$ROOT/$doc" "$ROOT/system/policy.json" <<'PY' || { echo "package_test: $doc does not show system/policy.json as shipped" >&2; exit 1; }
import json, re, sys
shipped = json.load(open(sys.argv[2]))
blocks = re.findall(r"```json\n(.*?)```", open(sys.argv[1]).read(), re.S)
sys.exit(0 if any(json.loads(b) == shipped for b in blocks if "annotationFields" in b and "keyFileRoots" in b) else 1)
PY
done
rm -rf "$OUT" "$OUT-next"
t0=$(date +%s)
deb=$("$ROOT/scripts/package.sh" --prebuilt "$BUILD" --output "$OUT" | tail -n1)
version=$(dpkg-deb -f "$deb" Version)
next=$("$ROOT/scripts/package.sh" --prebuilt "$BUILD" --output "$OUT-next" --version "$version+1" --no-lintian | tail -n1)
echo "FIGURE: package_build_s=$(( $(date +%s) - t0 )) (two packages, lintian on the first)"
echo "# lintian on $(basename "$deb") (every level from info up):"
sed 's/^/#   /' "$OUT/lintian.txt"
[ -s "$OUT/lintian.txt" ] || echo "#   (nothing)"
# the packed binary is a Release build with Debian's hardening: PIE, full RELRO (BIND_NOW),
# stack protector, fortified libc calls
x=$(mktemp -d)
dpkg-deb -x "$deb" "$x"
bin=$x/usr/bin/vtpm-hook
grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD/CMakeCache.txt" || { echo "package_test: $BUILD is not a Release build" >&2; exit 1; }
readelf -hW "$bin" | grep -q 'Type: *DYN' || { echo "package_test: /usr/bin/vtpm-hook is not PIE" >&2; exit 1; }
readelf -lW "$bin" | grep -q GNU_RELRO && readelf -dW "$bin" | grep -Eq 'BIND_NOW|FLAGS_1.*NOW' ||
    { echo "package_test: /usr/bin/vtpm-hook lacks full RELRO" >&2; exit 1; }
syms=$(readelf --dyn-syms -W "$bin")
grep -q '__stack_chk_fail' <<<"$syms" || { echo "package_test: no stack protector in /usr/bin/vtpm-hook" >&2; exit 1; }
fortified=$(grep -oE '__[a-z_]+_chk' <<<"$syms" | grep -v stack_chk | sort -u | tr '\n' ' ')
[ -n "$fortified" ] || { echo "package_test: no fortified libc call in /usr/bin/vtpm-hook (_FORTIFY_SOURCE)" >&2; exit 1; }
rm -rf "$x"
echo "# /usr/bin/vtpm-hook: PIE, RELRO + BIND_NOW, stack protector, fortified: $fortified"
echo "# files:"; dpkg-deb -c "$deb" | awk '{ print "#   " $1 " " $6 ($7 ? " " $7 " " $8 : "") }'
PKG_DEB=$deb PKG_DEB_NEXT=$next exec "$ROOT/tests/e2e/run.sh" package "$BUILD/vtpm-hook"
