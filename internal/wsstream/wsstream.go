// Package wsstream carries byte streams (a VM's VNC socket, a local TCP client) over WebSocket
// binary messages, as the agent serves them and the kumo CLI consumes them.
package wsstream

import (
	"net"

	"github.com/gorilla/websocket"
)

// BufferSize is the chunk size read from a stream into one WebSocket message.
const BufferSize = 32 << 10

// Protocol is the WebSocket subprotocol the agent selects when a client offers it. Browsers must
// offer one beside the bearer-token subprotocol (base64url.bearer.authorization.k8s.io.<token>),
// which the API server removes once it authenticated the request: the agent echoes this one, as a
// browser requires when it offered any. Clients that offer none (the kumo CLI) get none.
const Protocol = "stream.kumo.dev"

// Pipe copies bytes both ways between a WebSocket and a stream until either side ends.
func Pipe(ws *websocket.Conn, conn net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		buf := make([]byte, BufferSize)
		for {
			n, err := conn.Read(buf)
			if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
				break
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				break
			}
			if _, err := conn.Write(msg); err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
}
