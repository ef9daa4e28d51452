#!/usr/bin/env bash
# Builds the browser console's bundle (web/ → internal/webui/dist, embedded into kumod by
# go:embed): npm packages exactly as web/package-lock.json pins them (npm ci, no install scripts),
# bundled by esbuild. npm ci runs again only when the lockfile changed.
set -euo pipefail
cd "$(dirname "$0")/../web"
command -v npm >/dev/null || { echo "npm is missing: run hack/install-deps.sh" >&2; exit 1; }
stamp=node_modules/.kumo-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
node build.mjs
