#!/usr/bin/env bash
# Runs every check and test Kumo has: generated code is current, formatting, vet, then all Go
# tests (unit, fuzz seed corpora and the system tests on real kumod/etcd/kubectl). Ends with the
# go test summary: every skipped test with its reason, and a "N passed, N failed, N skipped" line.
# A skip not admitted by hack/skips-allowed.txt fails the run like a failed test.
set -uo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=${GOFLAGS:-}
fail=0

echo "== dependencies and guest images"
hack/install-deps.sh || fail=1
images/build.sh all || fail=1
echo "== browser console bundle"
hack/build-ui.sh || fail=1

echo "== generated code"
hack/verify-codegen.sh || fail=1

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; fail=1; else echo "ok"; fi

echo "== go vet"
go vet ./... || fail=1

echo "== go test"
out=$(mktemp)
go test -count=1 -timeout 45m -json ./... > "$out"
test_rc=$?
# Human-readable package lines, as plain go test prints them, then the skips.
go run ./hack/testsummary -skips-allowed hack/skips-allowed.txt < "$out"
summary_rc=$?
rm -f "$out"
[ $test_rc -ne 0 ] && fail=1
[ $summary_rc -ne 0 ] && fail=1
exit $fail
