// Kumo's browser console: log in with a tenant's token, see the tenant's VMs and disks live
// (watches), start/stop/restart VMs, and open a VM's serial console (xterm.js) or screen (noVNC).
// Views are chosen by the URL's fragment: #/ (list), #/console/NS/NAME, #/vnc/NS/NAME.
import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { APIError, APPS, Watcher, session, tokenFromInput, vmAction, whoAmI } from "./api.js";
import { openConsole } from "./console.js";
import { openVNC } from "./vnc.js";
import { diskColumns, vmColumns } from "./tables.js";

const app = document.getElementById("app");

// h makes an element; text is always set as text, never parsed as HTML.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

let me = null; // who the server says the token belongs to
let closeView = () => {};

function setView(...nodes) {
  closeView();
  closeView = () => {};
  app.replaceChildren(...nodes);
}

function header() {
  const who = me.tenant ? `${me.user} · tenant ${me.tenant}` : `${me.user}${me.admin ? " · administrator" : ""}`;
  return h("header", {},
    h("a", { href: "#/", class: "brand" }, "Kumo"),
    h("span", { class: "who", dataset: { field: "identity" } }, who),
    h("button", { class: "secondary", dataset: { action: "logout" }, onclick: logout }, "Log out"));
}

function logout() {
  session.clear();
  me = null;
  location.hash = "#/";
  route();
}

function loginView(message) {
  const input = h("textarea", { id: "token", rows: 6, spellcheck: "false", autocomplete: "off",
    placeholder: "kumo1.… (kumo tenant token NAME), or a kubeconfig with a token" });
  const error = h("p", { class: "error", dataset: { field: "login-error" } }, message || "");
  const form = h("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = "";
    let token;
    try {
      token = tokenFromInput(input.value);
      const who = await whoAmI(token);
      if (!who.namespace && !who.admin) throw new Error(`${who.user} belongs to no tenant`);
      session.save(token);
      me = who;
      route();
    } catch (err) {
      error.textContent = err instanceof APIError && err.status === 401 ? "The server does not accept this token." : err.message;
    }
  } },
  h("h1", {}, "Kumo console"),
  h("label", { for: "token" }, "Token or kubeconfig"),
  input,
  h("p", { class: "hint" }, "A tenant's token comes from ", h("code", {}, "kumo tenant token NAME"),
    " or the token of its kubeconfig. Client certificates cannot be used here. The token stays in this tab only."),
  h("button", { type: "submit", dataset: { action: "login" } }, "Log in"),
  error);
  setView(form);
  input.focus();
}

// objectTable is a table of objects with columns [{title, field, cell(obj) -> string|Node}].
// update(items) changes only the cells whose content changed, so a button the user is clicking
// is not replaced under the pointer by an unrelated status update.
function objectTable(kind, columns, empty) {
  const tbody = h("tbody");
  const el = h("table", { class: "objects", dataset: { kind } },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.title)))), tbody);
  const key = (o) => o.metadata.namespace + "/" + o.metadata.name;
  const update = (items) => {
    const objs = [...items.values()].sort((a, b) => key(a).localeCompare(key(b)));
    if (objs.length === 0) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)));
      return;
    }
    const rows = new Map([...tbody.querySelectorAll("tr[data-name]")].map((tr) => [tr.dataset.namespace + "/" + tr.dataset.name, tr]));
    const wanted = objs.map((o) => {
      let tr = rows.get(key(o));
      if (!tr) {
        tr = h("tr", { dataset: { name: o.metadata.name, namespace: o.metadata.namespace } },
          columns.map((c) => h("td", { dataset: { field: c.field } })));
      }
      columns.forEach((c, i) => {
        const fresh = h("td", {}, c.cell(o));
        const td = tr.children[i];
        if (fresh.innerHTML !== td.innerHTML) td.replaceChildren(...fresh.childNodes);
      });
      return tr;
    });
    const current = [...tbody.children];
    if (current.length !== wanted.length || wanted.some((tr, i) => current[i] !== tr)) tbody.replaceChildren(...wanted);
  };
  return { el, update };
}

function listView() {
  const flash = h("p", { class: "flash", dataset: { field: "flash" } });
  const vmsBox = h("section", {}, h("h2", {}, "Virtual machines ", h("small", { dataset: { field: "vms-state" } })), h("div"));
  const disksBox = h("section", {}, h("h2", {}, "Disks ", h("small", { dataset: { field: "disks-state" } })), h("div"));
  const scope = me.namespace ? `${APPS}/namespaces/${encodeURIComponent(me.namespace)}` : APPS;

  const act = async (vm, action) => {
    flash.textContent = "";
    flash.className = "flash";
    try {
      await vmAction(vm.metadata.namespace, vm.metadata.name, action);
      flash.textContent = `${action} ${vm.metadata.name}: asked`;
    } catch (err) {
      flash.textContent = `${action} ${vm.metadata.name}: ${err.message}`;
      flash.className = "flash error";
    }
  };
  const vmCols = vmColumns({ act, h, showNamespace: !me.namespace });
  const diskCols = diskColumns({ h, showNamespace: !me.namespace });
  const show = (box, kind, cols, empty) => {
    const t = objectTable(kind, cols, empty);
    box.lastChild.replaceWith(h("div", {}, t.el));
    return (items, state) => {
      t.update(items);
      box.querySelector("small").textContent = state === "live" ? "· live" : "· " + state;
      if (state.startsWith("refused")) box.querySelector("small").className = "error";
    };
  };
  const vms = new Watcher(`${scope}/vminstances`, show(vmsBox, "vminstances", vmCols, "No VMs yet: kumo apply -f a VMInstance manifest."));
  const disks = new Watcher(`${scope}/vmdisks`, show(disksBox, "vmdisks", diskCols, "No disks yet."));
  vms.run();
  disks.run();
  setView(header(), h("main", {}, flash, vmsBox, disksBox));
  closeView = () => {
    vms.stop();
    disks.stop();
  };
}

function streamView(kind, namespace, name) {
  const status = h("span", { class: "status", dataset: { field: "stream-state" } });
  const screen = h("div", { class: kind === "console" ? "terminal" : "screen", id: kind });
  const tools = h("div", { class: "view-tools" },
    h("a", { href: "#/", class: "back" }, "← VMs"),
    h("strong", {}, `${name}`), h("span", { class: "muted" }, ` ${kind === "console" ? "serial console" : "VNC"} · `), status);
  setView(header(), h("main", { class: "stream" }, h("div", {}, tools, screen)));
  const setStatus = (s) => { status.textContent = s; };
  closeView = kind === "console" ? openConsole(screen, namespace, name, setStatus) : openVNC(screen, namespace, name, setStatus);
}

async function route() {
  const token = session.token();
  if (!token) return loginView();
  if (!me) {
    try {
      me = await whoAmI(token);
    } catch (err) {
      session.clear();
      return loginView(err instanceof APIError && err.status === 401 ? "Your token is no longer accepted: log in again." : err.message);
    }
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if ((parts[0] === "console" || parts[0] === "vnc") && parts.length === 3) return streamView(parts[0], parts[1], parts[2]);
  listView();
}

window.addEventListener("hashchange", route);
route();
