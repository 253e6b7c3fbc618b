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
    mapfile -t files < <(git ls-files '*.sh')
    [ ${#files[@]} -gt 0 ] || { echo "lint $1: no files to check (not a git checkout?)" >&2; exit 1; }
    shellcheck -S warning "${files[@]}" ;;
  *) echo "usage: $0 clang-format|shellcheck" >&2; exit 2 ;;
esac
echo "lint $1: ${#files[@]} files clean"
