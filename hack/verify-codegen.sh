#!/usr/bin/env bash
# Fails when the generated code differs from what the pinned generators produce now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
files=$(git ls-files 'pkg/**/zz_generated.*' hack/api-rules-violations.list; ls pkg/generated/openapi/*.go pkg/apis/*/v1alpha1/zz_generated.* 2>/dev/null)
for f in $(echo "$files" | sort -u); do mkdir -p "$tmp/$(dirname "$f")"; cp "$f" "$tmp/$f"; done
hack/update-codegen.sh >/dev/null
stale=0
for f in $(echo "$files" | sort -u); do
  if ! cmp -s "$f" "$tmp/$f"; then echo "stale generated file: $f (run hack/update-codegen.sh)"; stale=1; fi
done
[ $stale -eq 0 ] && echo "generated code is up to date"
exit $stale
