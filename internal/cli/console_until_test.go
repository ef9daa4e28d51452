package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestUntilMarkerFindsAMarkerSplitAcrossChunks(t *testing.T) {
	const marker = "done-42"
	out := "$ echo done-$((40+2))\r\n" + marker + "\r\n$ "
	at := strings.Index(out, marker)
	// Every way of cutting the output into two chunks, and one byte per chunk.
	for cut := 0; cut <= len(out); cut++ {
		u := newUntilMarker("vm1", marker, time.Minute)
		first := u.seen([]byte(out[:cut]))
		if want := cut >= at+len(marker); first != want {
			t.Fatalf("cut at %d: first chunk %q seen=%v, want %v", cut, out[:cut], first, want)
		}
		if !u.seen([]byte(out[cut:])) {
			t.Fatalf("cut at %d: marker %q not found in %q + %q", cut, marker, out[:cut], out[cut:])
		}
	}
	u := newUntilMarker("vm1", marker, time.Minute)
	for i := 0; i < len(out); i++ {
		if got, want := u.seen([]byte{out[i]}), i >= at+len(marker)-1; got != want {
			t.Fatalf("byte %d (%q): seen=%v, want %v", i, out[i], got, want)
		}
	}
}

func TestUntilMarkerIgnoresTheEchoedCommandAndPartialMarkers(t *testing.T) {
	u := newUntilMarker("vm1", "done-42", time.Minute)
	for _, chunk := range []string{"$ echo done-$((40+2))\r\n", "done-4", "\r\n", "done-", "41\r\n", "one-42"} {
		if u.seen([]byte(chunk)) {
			t.Fatalf("marker reported after %q", chunk)
		}
	}
	var none *untilMarker
	if none.seen([]byte("anything")) || none.expired() != nil || none.closed(nil) != nil {
		t.Error("a nil marker must wait for nothing")
	}
}

// consoleServer is a WebSocket server that plays the VM side of a console: it sends chunks with
// pauses, then either keeps the connection open or closes it.
func consoleServer(t *testing.T, chunks []string, closeAfter bool) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		go func() { // drain what the client types
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		for _, c := range chunks {
			if ws.WriteMessage(websocket.BinaryMessage, []byte(c)) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if closeAfter {
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return
		}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func TestConsoleUntilEndsWhenTheMarkerArrives(t *testing.T) {
	ws := consoleServer(t, []string{"$ echo done-$((40+2))\r\ndo", "ne-", "42\r\n$ "}, false)
	var out bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader("echo done-$((40+2))\n"), Out: &out, ErrOut: &out}
	// linger of an hour: the command must end on the marker, not on the end of input.
	if err := attachConsole(ws, streams, time.Hour, newUntilMarker("vm1", "done-42", time.Minute)); err != nil {
		t.Fatalf("attachConsole: %v", err)
	}
	if !strings.Contains(out.String(), "done-42") {
		t.Errorf("output %q lacks the marker", out.String())
	}
}

func TestConsoleUntilFailsWhenTheMarkerDoesNotArrive(t *testing.T) {
	ws := consoleServer(t, []string{"$ echo done-$((40+2))\r\n", "done-41\r\n"}, false)
	var out bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader("echo done-$((40+2))\n"), Out: &out, ErrOut: &out}
	err := attachConsole(ws, streams, time.Hour, newUntilMarker("vm1", "done-42", 300*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), `console of VM vm1: "done-42" did not appear within 300ms`) {
		t.Fatalf("attachConsole = %v, want a timeout naming the VM and the marker", err)
	}
}

func TestConsoleUntilFailsWhenTheConsoleClosesFirst(t *testing.T) {
	ws := consoleServer(t, []string{"$ poweroff\r\n"}, true)
	var out bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader("poweroff\n"), Out: &out, ErrOut: &out}
	err := attachConsole(ws, streams, time.Hour, newUntilMarker("vm1", "done-42", time.Minute))
	if err == nil || !strings.Contains(err.Error(), `console of VM vm1 closed before "done-42" appeared`) {
		t.Fatalf("attachConsole = %v, want the console's end reported", err)
	}
}
