// The columns of the VM and disk tables: what `kumo get vm,vmdisk -o wide` shows, plus actions.

function condition(obj, type) {
  return (obj.status?.conditions || []).find((c) => c.type === type);
}

// vmType is the instance type, or the size resources give the VM directly.
function vmType(vm) {
  const r = vm.spec.resources;
  if (r && (r.cpu || r.memory)) {
    const sockets = r.sockets && r.sockets !== "1" ? ` × ${r.sockets} sockets` : "";
    return `${r.cpu || "?"} vCPU${sockets} / ${r.memory || "?"}`;
  }
  return vm.spec.instanceType || "";
}

// phaseCell shows the phase and, on hover, why (the Ready or Scheduled condition's message).
function phaseCell(h, obj, conds) {
  const phase = obj.status?.phase || "Pending";
  const why = conds.map((t) => condition(obj, t)).find((c) => c && c.status !== "True" && c.message);
  return h("span", { class: "phase phase-" + phase.toLowerCase(), title: why ? why.message : null }, phase);
}

export function vmColumns({ act, h, showNamespace }) {
  const button = (vm, action, label, enabled) =>
    h("button", { class: "small", disabled: !enabled, dataset: { action }, onclick: () => act(vm, action) }, label);
  const link = (vm, kind, label, enabled) => enabled
    ? h("a", { class: "button small", dataset: { action: kind },
      href: `#/${kind}/${encodeURIComponent(vm.metadata.namespace)}/${encodeURIComponent(vm.metadata.name)}` }, label)
    : h("span", { class: "button small disabled" }, label);
  const cols = [
    { title: "Name", field: "name", cell: (vm) => vm.metadata.name },
    { title: "Phase", field: "phase", cell: (vm) => phaseCell(h, vm, ["Ready", "Scheduled"]) },
    { title: "Node", field: "node", cell: (vm) => vm.status?.node || "" },
    { title: "Datacenter", field: "datacenter", cell: (vm) => vm.status?.datacenter || "" },
    { title: "IPs", field: "ips", cell: (vm) => (vm.status?.ipAddresses || []).join(", ") },
    { title: "Type", field: "type", cell: vmType },
    { title: "Run strategy", field: "runStrategy", cell: (vm) => vm.spec.runStrategy || "" },
    {
      title: "", field: "actions", cell: (vm) => {
        const phase = vm.status?.phase || "";
        const up = phase === "Running" || phase === "Starting";
        const halted = vm.spec.runStrategy === "Halted";
        return h("span", { class: "actions" },
          button(vm, "start", "Start", halted || (!up && vm.spec.runStrategy !== "Always")),
          button(vm, "stop", "Stop", !halted && (up || vm.spec.runStrategy === "Always")),
          button(vm, "restart", "Restart", up),
          link(vm, "console", "Console", !!vm.status?.node),
          link(vm, "vnc", "VNC", phase === "Running"));
      },
    },
  ];
  if (showNamespace) cols.unshift({ title: "Namespace", field: "namespace", cell: (o) => o.metadata.namespace });
  return cols;
}

export function diskColumns({ h, showNamespace }) {
  const cols = [
    { title: "Name", field: "name", cell: (d) => d.metadata.name },
    { title: "Phase", field: "phase", cell: (d) => phaseCell(h, d, ["Ready"]) },
    { title: "Progress", field: "progress", cell: (d) => d.status?.progress || "" },
    { title: "Size", field: "size", cell: (d) => d.status?.size || d.spec.storage || "" },
    { title: "Class", field: "storageClass", cell: (d) => d.spec.storageClass || "replicated" },
    { title: "Node", field: "node", cell: (d) => d.status?.node || "" },
  ];
  if (showNamespace) cols.unshift({ title: "Namespace", field: "namespace", cell: (o) => o.metadata.namespace });
  return cols;
}
