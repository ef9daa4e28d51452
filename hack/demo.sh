#!/usr/bin/env bash
# The main job: starts an all-in-one Kumo (API server, controllers, embedded etcd) in the
# background, creates the tenant "demo" and applies the example VMDisk + VMInstance as that
# tenant. "hack/demo.sh stop" stops the server. Data, logs and kubeconfigs go to $KUMO_DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${KUMO_DEMO_DIR:-$PWD/_output/demo}
PORT=${KUMO_PORT:-6443}
mkdir -p "$DIR"
pidfile=$DIR/kumod.pid

if [ "${1:-}" = stop ]; then
  if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
    while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.2; done
    echo "kumod stopped"
  fi
  rm -f "$pidfile"
  exit 0
fi

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "kumod already running (pid $(cat "$pidfile"))"
else
  nohup bin/kumod all-in-one --data-dir "$DIR/data" --port "$PORT" \
    --etcd-client-port "${KUMO_ETCD_CLIENT_PORT:-2379}" --etcd-peer-port "${KUMO_ETCD_PEER_PORT:-2380}" \
    > "$DIR/kumod.log" 2>&1 &
  echo $! > "$pidfile"
  echo "kumod started (pid $!), log: $DIR/kumod.log"
fi

export KUBECONFIG=$DIR/data/admin.kubeconfig
for _ in $(seq 150); do
  if [ -f "$KUBECONFIG" ] && bin/kumo get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "kumod exited:"; tail -20 "$DIR/kumod.log"; exit 1; fi
  sleep 0.2
done
bin/kumo get --raw /readyz >/dev/null

tenant_kc=$DIR/demo.kubeconfig
if [ ! -f "$tenant_kc" ] || ! bin/kumo get tenant demo >/dev/null 2>&1; then
  bin/kumo get tenant demo >/dev/null 2>&1 || bin/kumo tenant create demo -o "$tenant_kc"
  [ -f "$tenant_kc" ] || bin/kumo tenant kubeconfig demo -o "$tenant_kc"
fi

echo; echo "== kumo apply -f examples/  (as a user of tenant demo)"
KUBECONFIG=$tenant_kc bin/kumo apply -f examples/
echo; echo "== kumo get vmdisks,vminstances"
KUBECONFIG=$tenant_kc bin/kumo get vmdisks,vminstances
cat <<MSG

Kumo is running. Try:
  export KUBECONFIG=$tenant_kc      # the demo tenant's user
  bin/kumo get vm -w
  bin/kumo describe vm vm-example
  KUBECONFIG=$KUBECONFIG bin/kumo get tenants,instancetypes   # as the administrator
Stop it with: make stop
MSG
