#!/bin/bash
# tests/package/package_test.sh - the Debian package, end to end: scripts/package.sh packs the
# suite's own build (compile once) as this version and as a higher one (the upgrade), lintian
# must report no error, then one VM boot installs it with apt and runs package-tests.sh,
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
next=$("$ROOT/scripts/package.sh" --prebuilt "$BUILD" --output "$OUT-next" --version "$version+1" | tail -n1)
echo "FIGURE: package_build_s=$(( $(date +%s) - t0 )) (two packages, lintian on each)"
echo "# lintian on $(basename "$deb") (every level from info up):"
sed 's/^/#   /' "$OUT/lintian.txt"
[ -s "$OUT/lintian.txt" ] || echo "#   (nothing)"
echo "# files:"; dpkg-deb -c "$deb" | awk '{ print "#   " $1 " " $6 ($7 ? " " $7 " " $8 : "") }'
PKG_DEB=$deb PKG_DEB_NEXT=$next exec "$ROOT/tests/e2e/run.sh" package "$BUILD/vtpm-hook"
