// The serial console in an xterm.js terminal: what the guest printed so far (the agent's serial
// log), then the live stream (vminstances/NAME/console over a WebSocket); keys go to the guest.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { serialLog, streamProtocols, streamURL } from "./api.js";

// historyMax bounds how much of the kept serial log is replayed into the terminal.
const historyMax = 256 * 1024;

// overlap returns how many leading bytes of live the end of history already holds: the live
// stream is opened before the log is read, so what arrived in between is in both.
export function overlap(history, live) {
  for (let k = Math.min(history.length, live.length); k > 0; k--) {
    let same = true;
    for (let i = 0; i < k; i++) {
      if (history[history.length - k + i] !== live[i]) {
        same = false;
        break;
      }
    }
    if (same) return k;
  }
  return 0;
}

function concat(chunks) {
  const n = chunks.reduce((s, c) => s + c.length, 0);
  const out = new Uint8Array(n);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

// openConsole attaches a terminal in el to VM name of namespace; setStatus reports the state.
// It returns a function that closes the console.
export function openConsole(el, namespace, name, setStatus) {
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14, convertEol: false });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  const onResize = () => fit.fit();
  window.addEventListener("resize", onResize);

  const abort = new AbortController();
  let pending = []; // live output held back until the history is written
  let replaying = true;
  const ws = new WebSocket(streamURL(namespace, name, "console"), streamProtocols());
  ws.binaryType = "arraybuffer";
  setStatus("connecting");
  ws.onopen = () => {
    setStatus("connected");
    term.focus();
  };
  ws.onmessage = (e) => {
    const chunk = typeof e.data === "string" ? new TextEncoder().encode(e.data) : new Uint8Array(e.data);
    if (replaying) pending.push(chunk);
    else term.write(chunk);
  };
  ws.onclose = (e) => {
    setStatus(e.code === 1000 ? "closed" : `closed (${e.code}${e.reason ? ": " + e.reason : ""}): the VM may not run, or the token may not reach it`);
    term.write("\r\n\x1b[2m[console closed]\x1b[0m\r\n");
  };
  const encoder = new TextEncoder();
  term.onData((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onBinary((data) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    ws.send(bytes);
  });

  serialLog(namespace, name, abort.signal)
    .catch(() => new Uint8Array(0)) // no history (e.g. just started): the live stream alone
    .then((history) => {
      if (abort.signal.aborted) return;
      if (history.length > historyMax) history = history.slice(history.length - historyMax);
      const live = concat(pending);
      term.write(history);
      term.write(live.slice(overlap(history, live)));
      pending = [];
      replaying = false;
    });

  return () => {
    abort.abort();
    window.removeEventListener("resize", onResize);
    ws.onclose = null;
    ws.close(1000);
    term.dispose();
  };
}
