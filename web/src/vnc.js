// The VM's screen with noVNC over vminstances/NAME/vnc (plain RFB inside WebSocket binary
// messages; QEMU's VNC server on the node asks for no password: the API server authorized the
// stream already).
import RFB from "@novnc/novnc";
import { streamProtocols, streamURL } from "./api.js";

// openVNC shows VM name of namespace in el; setStatus reports the state. It returns a function
// that disconnects.
export function openVNC(el, namespace, name, setStatus) {
  setStatus("connecting");
  const rfb = new RFB(el, streamURL(namespace, name, "vnc"), { wsProtocols: streamProtocols() });
  rfb.scaleViewport = true;
  rfb.background = "#111";
  rfb.addEventListener("connect", () => setStatus("connected"));
  rfb.addEventListener("disconnect", (e) => setStatus(e.detail.clean ? "disconnected" : "connection lost: the VM may not run, or the token may not reach it"));
  rfb.addEventListener("securityfailure", (e) => setStatus("security failure: " + (e.detail.reason || e.detail.status)));
  rfb.addEventListener("desktopname", (e) => setStatus("connected: " + e.detail.name));
  const ctrlAltDel = document.createElement("button");
  ctrlAltDel.textContent = "Send Ctrl+Alt+Del";
  ctrlAltDel.className = "secondary";
  ctrlAltDel.dataset.action = "ctrl-alt-del";
  ctrlAltDel.onclick = () => rfb.sendCtrlAltDel();
  el.parentElement.querySelector(".view-tools")?.append(ctrlAltDel);
  return () => {
    ctrlAltDel.remove();
    rfb.disconnect();
  };
}
