#!/bin/bash
# tests/lint.sh clang-format|shellcheck - the style checks CI asks for, over every tracked file.
#   clang-format -> clang-format --dry-run -Werror on the C++ sources (.clang-format)
#   shell scripts -> shellcheck -S warning (.shellcheckrc)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  clang-format)
    mapfile -t files < <(git ls-files '*.cpp' '*.h')
    [ ${#files[@]} -gt 0 ] || { echo "lint $1: no files to check (not a git checkout?)" >&2; exit 1; }
    clang-format --dry-run -Werror "${files[@]}" ;;
  shellcheck)
    # the scripts, the package's maintainer scripts (sh) and the bash completion
    mapfile -t files < <(git ls-files '*.sh' debian/postinst debian/postrm debian/prerm)
    [ ${#files[@]} -gt 0 ] || { echo "lint $1: no files to check (not a git checkout?)" >&2; exit 1; }
    shellcheck -S warning "${files[@]}"
    shellcheck -S warning -s bash system/bash-completion/vtpm-hook
    files+=(system/bash-completion/vtpm-hook) ;;
  *) echo "usage: $0 clang-format|shellcheck" >&2; exit 2 ;;
esac
echo "lint $1: ${#files[@]} files clean"
