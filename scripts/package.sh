#!/bin/bash
# Builds the Debian package (debhelper, debian/) from a clean copy of this tree and writes it,
# with its -dbgsym companion, under dist/; then lintian checks it (an error fails the build).
#
#   scripts/package.sh [--prebuilt BUILD_DIR] [--version VERSION] [--output DIR] [--no-lintian]
#
# Without --prebuilt dpkg-buildpackage compiles everything (Release, dpkg-buildflags'
# hardening) and runs the unit tests. --prebuilt packs a build that scripts/build.sh made with
# the same flags (the test suite's: compile once). --version gives the package another version
# than debian/changelog's (an entry is added in the copy; the upgrade test uses it).
# --no-lintian skips the check (the upgrade test's second package: the same files again).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PREBUILT="" VERSION="" OUT=$ROOT/dist LINTIAN=1
while [ $# -gt 0 ]; do
    case $1 in
        --prebuilt) PREBUILT=$(cd "$2" && pwd); shift 2 ;;
        --version)  VERSION=$2; shift 2 ;;
        --output)   mkdir -p "$2"; OUT=$(cd "$2" && pwd); shift 2 ;;
        --no-lintian) LINTIAN=0; shift ;;
        *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
./scripts/install-deps.sh

changelog_version=$(dpkg-parsechangelog -l debian/changelog -S Version)
cmake_version=$(sed -n 's/^project(vtpm-hook VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ "${changelog_version%%[-~+]*}" = "$cmake_version" ] || {
    echo "package.sh: debian/changelog has $changelog_version, CMakeLists.txt $cmake_version" >&2; exit 1; }
if [ -n "$PREBUILT" ]; then
    # the package promises Debian's hardening flags: only a build configured with them
    grep -q '^CMAKE_CXX_FLAGS:STRING=.*-D_FORTIFY_SOURCE=2.*-fstack-protector-strong' "$PREBUILT/CMakeCache.txt" || {
        echo "package.sh: $PREBUILT was not configured with dpkg-buildflags (use scripts/build.sh)" >&2; exit 1; }
    [ -x "$PREBUILT/vtpm-hook" ] && [ -e "$PREBUILT/man/vtpm-hook.8" ] || {
        echo "package.sh: $PREBUILT has no vtpm-hook or no man pages (build it: scripts/build.sh)" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/vtpm-hook-pkg.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/vtpm-hook-${VERSION:-$changelog_version}
mkdir -p "$SRC"
# the tracked files (as they are in the working tree): never a build directory or a stray file
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
    echo "package.sh: note: packing the working tree's changes to tracked files" >&2
git ls-files -z --cached |
    xargs -0 cp --parents -t "$SRC" 2>/dev/null || { echo "package.sh: cannot copy the tree" >&2; exit 1; }
if [ -n "$VERSION" ]; then
    { printf 'vtpm-hook (%s) unstable; urgency=medium\n\n  * Rebuilt as %s.\n\n -- %s  %s\n\n' \
          "$VERSION" "$VERSION" "$(dpkg-parsechangelog -l debian/changelog -S Maintainer)" "$(date -R)"
      cat debian/changelog; } > "$SRC/debian/changelog"
fi
(cd "$SRC" && VTPM_PREBUILT=$PREBUILT dpkg-buildpackage -b -us -uc) > "$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log" >&2; echo "package.sh: dpkg-buildpackage failed" >&2; exit 1; }
grep -E '^\[ *(PASSED|FAILED) *\]' "$WORK/build.log" >&2 || true   # the unit tests' verdict
mkdir -p "$OUT"
rm -f "$OUT"/vtpm-hook_*.deb "$OUT"/vtpm-hook-dbgsym_*.deb   # one version here: apt install ./dist/*.deb
mapfile -t debs < <(find "$WORK" -maxdepth 1 -name '*.deb')
mv -f "${debs[@]}" "$OUT/"
deb=$(find "$OUT" -maxdepth 1 -name "vtpm-hook_${VERSION:-$changelog_version}_*.deb" | head -n1)
echo "package.sh: $deb" >&2
[ "$LINTIAN" = 1 ] || { echo "$deb"; exit 0; }
# lintian as root is refused without --allow-root (the machines here build as root)
lrc=0   # 0 clean, 1 tags found (judged below), anything else: lintian itself failed
lintian --allow-root --display-level '>=info' "$deb" > "$OUT/lintian.txt" || lrc=$?
cat "$OUT/lintian.txt" >&2
[ "$lrc" -le 1 ] || { echo "package.sh: lintian failed (exit $lrc)" >&2; exit 1; }
if grep -q '^E: ' "$OUT/lintian.txt"; then
    echo "package.sh: lintian reports errors (above)" >&2; exit 1
fi
echo "$deb"
