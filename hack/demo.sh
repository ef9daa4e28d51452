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
  # VMs outlive their agent by design; the demo's are stopped with it.
  pkill -f "qemu-system.*$DIR/data/run" && echo "demo VMs stopped" || true
  rm -f "$pidfile"
  exit 0
fi

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "kumod already running (pid $(cat "$pidfile"))"
else
  nohup bin/kumod all-in-one --data-dir "$DIR/data" --port "$PORT" \
    --etcd-client-port "${KUMO_ETCD_CLIENT_PORT:-2379}" --etcd-peer-port "${KUMO_ETCD_PEER_PORT:-2380}" \
    --images-dir "${KUMO_IMAGES_DIR:-$PWD/_output/images}" --node "${KUMO_NODE:-$(hostname)}" --datacenter dc1 \
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
echo; echo "== waiting for vm-example to run and its guest to boot (TCG can take a minute)"
for _ in $(seq 300); do
  phase=$(KUBECONFIG=$tenant_kc bin/kumo get vm vm-example -o jsonpath='{.status.phase}' 2>/dev/null || true)
  if [ "$phase" = Running ] && KUBECONFIG=$tenant_kc bin/kumo console vm-example --show-log 2>/dev/null | grep -aq KUMO-GUEST-READY; then break; fi
  if [ "$phase" = Failed ]; then KUBECONFIG=$tenant_kc bin/kumo describe vm vm-example; exit 1; fi
  sleep 1
done
KUBECONFIG=$tenant_kc bin/kumo get vmdisks,vminstances
echo; echo "== the guest's serial console so far (kumo console vm-example --show-log)"
KUBECONFIG=$tenant_kc bin/kumo console vm-example --show-log | grep -a KUMO-GUEST-READY || { echo "the guest did not print its marker yet"; exit 1; }
token_file=$DIR/demo.token
bin/kumo tenant token demo -o "$token_file" 2>/dev/null
cat <<MSG

Browser console: https://127.0.0.1:$PORT/ui/
  log in with the demo tenant's token: $(cat "$token_file")
  (also in $token_file; the server's certificate is signed by Kumo's own CA, $DIR/data/pki/ca.crt:
  import it into the browser, or accept the warning for this local demo)

Kumo is running a VM. Try:
  export KUBECONFIG=$tenant_kc      # the demo tenant's user
  bin/kumo console vm-example       # serial console (Ctrl+] leaves)
  bin/kumo vnc vm-example           # a local port for any VNC viewer
  bin/kumo restart vm-example; bin/kumo get vm -w
  bin/kumo describe vm vm-example
  KUBECONFIG=$KUBECONFIG bin/kumo get nodes,tenants   # as the administrator
Stop it with: make stop   (VMs outlive a kumod restart by design; make stop also stops the demo's VMs)
MSG
