// The console's only way to Kumo: the API itself, with the user's bearer token. The token lives
// in this tab's sessionStorage (gone when the tab closes) and travels in the Authorization header
// of fetch requests, or as the WebSocket subprotocol Kubernetes defines for browsers
// (base64url.bearer.authorization.k8s.io.<token>) on the console and VNC streams. It is never a
// cookie, so no other site can make the browser send it.

const TOKEN_KEY = "kumo.token";

export const APPS = "/apis/apps.cozystack.io/v1alpha1";

// STREAM_PROTOCOL is the subprotocol the agent echoes (internal/wsstream.Protocol).
export const STREAM_PROTOCOL = "stream.kumo.dev";
const BEARER_PROTOCOL_PREFIX = "base64url.bearer.authorization.k8s.io.";

export const session = {
  token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  save(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

// APIError is a failed API request: its HTTP status and the server's message.
export class APIError extends Error {
  constructor(status, message, reason) {
    super(message);
    this.status = status;
    this.reason = reason || "";
  }
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let reason = "";
  try {
    const body = await resp.json();
    if (body && body.message) message = body.message;
    if (body && body.reason) reason = body.reason;
  } catch (_) {
    // not a Status object
  }
  return new APIError(resp.status, message, reason);
}

function headers(token, extra) {
  return Object.assign({ Authorization: "Bearer " + token, Accept: "application/json" }, extra || {});
}

// request sends one API request with the session's token (or token) and returns the decoded
// JSON answer, or throws an APIError.
export async function request(method, path, { body, signal, token, accept } = {}) {
  const tok = token || session.token();
  const init = {
    method,
    headers: headers(tok, body ? { "Content-Type": "application/json" } : {}),
    signal,
    credentials: "omit",
    cache: "no-store",
  };
  if (accept) init.headers.Accept = accept;
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (!resp.ok) throw await errorOf(resp);
  if (accept && !accept.includes("json")) return new Uint8Array(await resp.arrayBuffer());
  return resp.json();
}

// whoAmI asks the server who token belongs to ({user, groups, tenant, namespace, admin}).
export function whoAmI(token) {
  return request("GET", "/kumo/whoami", { token });
}

// tokenFromInput takes what the user pasted: a bare token, or a kubeconfig whose user has a
// token. Client certificates cannot be used by a page (the browser's TLS layer would have to
// present them), so a kubeconfig with only a certificate is refused with a hint.
export function tokenFromInput(text) {
  const t = (text || "").trim();
  if (!t) throw new Error("paste a token (kumo tenant token NAME) or a kubeconfig with a token");
  if (!/^\s*(apiVersion|kind|clusters|users|contexts|current-context)\s*:/m.test(t)) {
    if (/\s/.test(t)) throw new Error("a token is one word without spaces");
    return t;
  }
  const tokens = [...t.matchAll(/^\s*token:\s*["']?([^\s"']+)["']?\s*$/gm)].map((m) => m[1]);
  if (tokens.length === 1) return tokens[0];
  if (tokens.length > 1) throw new Error(`the kubeconfig has ${tokens.length} tokens; paste the one to log in with`);
  if (/client-certificate/.test(t)) {
    throw new Error("this kubeconfig authenticates with a client certificate, which the browser console cannot use; use a token (kumo tenant token NAME)");
  }
  throw new Error("the kubeconfig has no token");
}

// streamURL is the WebSocket address of a VM's console or VNC stream on this server.
export function streamURL(namespace, name, kind) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${APPS}/namespaces/${encodeURIComponent(namespace)}/vminstances/${encodeURIComponent(name)}/${kind}`;
}

// streamProtocols carry the token to the API server (which removes it) and name the stream
// protocol the agent echoes.
export function streamProtocols(token) {
  const bytes = new TextEncoder().encode(token || session.token());
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  const b64url = btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return [BEARER_PROTOCOL_PREFIX + b64url, STREAM_PROTOCOL];
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// Watcher keeps a live copy of a collection: it lists it, then follows a watch (?watch=1) from
// the list's resourceVersion, relisting when the server says that version is gone (410) and
// reconnecting with back-off (1 s doubling to 30 s) when the stream breaks.
export class Watcher {
  // path is the collection's URL; onChange(items Map, state) is called after every change;
  // state is "live", "reconnecting: <why>" or "refused: <why>" (a 401/403 ends the watch).
  constructor(path, onChange) {
    this.path = path;
    this.onChange = onChange;
    this.items = new Map();
    this.abort = new AbortController();
  }

  stop() {
    this.abort.abort();
  }

  async run() {
    const signal = this.abort.signal;
    let backoff = 1000;
    let rv = "";
    while (!signal.aborted) {
      try {
        if (!rv) {
          const list = await request("GET", this.path, { signal });
          this.items = new Map(list.items.map((o) => [o.metadata.name, o]));
          rv = list.metadata.resourceVersion;
          this.onChange(this.items, "live");
        }
        rv = await this.follow(rv, signal);
        backoff = 1000;
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof APIError && (err.status === 401 || err.status === 403)) {
          this.onChange(this.items, "refused: " + err.message);
          return;
        }
        if (err instanceof APIError && err.status === 410) {
          rv = "";
          continue;
        }
        this.onChange(this.items, "reconnecting: " + err.message);
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 30000);
      }
    }
  }

  // follow reads one watch stream to its end and returns the last resourceVersion seen ("" when
  // the server said it is too old).
  async follow(rv, signal) {
    const url = `${this.path}?watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(rv)}`;
    const resp = await fetch(url, { headers: headers(session.token()), signal, credentials: "omit", cache: "no-store" });
    if (!resp.ok) throw await errorOf(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return rv;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === "ERROR") {
          if (ev.object && ev.object.code === 410) return "";
          throw new APIError(ev.object && ev.object.code, (ev.object && ev.object.message) || "watch error");
        }
        rv = ev.object.metadata.resourceVersion || rv;
        if (ev.type === "BOOKMARK") continue;
        if (ev.type === "DELETED") this.items.delete(ev.object.metadata.name);
        else this.items.set(ev.object.metadata.name, ev.object);
        this.onChange(this.items, "live");
      }
    }
  }
}

// vmAction asks for start, stop or restart (the VM's subresources).
export function vmAction(namespace, name, action) {
  return request("POST", `${APPS}/namespaces/${encodeURIComponent(namespace)}/vminstances/${encodeURIComponent(name)}/${action}`, {
    body: { apiVersion: "apps.cozystack.io/v1alpha1", kind: "VMStateChange" },
  });
}

// serialLog is what the VM's guest printed since its incarnation started (kept by the agent),
// as bytes.
export function serialLog(namespace, name, signal) {
  return request("GET", `${APPS}/namespaces/${encodeURIComponent(namespace)}/vminstances/${encodeURIComponent(name)}/console?showLog=true`, {
    signal,
    accept: "text/plain, */*",
  });
}
