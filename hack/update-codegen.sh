#!/usr/bin/env bash
# Regenerates deepcopy and OpenAPI code with the generators pinned in go.mod (go tool).
set -euo pipefail
cd "$(dirname "$0")/.."
header=hack/boilerplate.go.txt
apis=(./pkg/apis/apps/v1alpha1 ./pkg/apis/kumo/v1alpha1)

go tool deepcopy-gen --go-header-file "$header" --output-file zz_generated.deepcopy.go "${apis[@]}"

readonly_pkgs=(
  k8s.io/apimachinery/pkg/apis/meta/v1
  k8s.io/apimachinery/pkg/runtime
  k8s.io/apimachinery/pkg/version
  k8s.io/apimachinery/pkg/api/resource
  k8s.io/apimachinery/pkg/util/intstr
  k8s.io/api/core/v1
  k8s.io/api/coordination/v1
)
ro_flags=()
for p in "${readonly_pkgs[@]}"; do ro_flags+=(--readonly-pkg "$p"); done
mkdir -p pkg/generated/openapi
go tool openapi-gen --go-header-file "$header" \
  --output-dir pkg/generated/openapi --output-pkg kumo.dev/kumo/pkg/generated/openapi \
  --output-file zz_generated.openapi.go --output-model-name-file zz_generated.model_name.go \
  --report-filename hack/api-rules-violations.list \
  "${ro_flags[@]}" "${apis[@]}" "${readonly_pkgs[@]}"
