package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"kumo.dev/kumo/internal/wsstream"
)

// escapeByte (Ctrl+]) leaves an interactive console, as in telnet and virtctl.
const escapeByte = 0x1d

// dialStream opens the WebSocket of vminstances/NAME/<kind> with the user's credentials.
func dialStream(ctx context.Context, f cmdutil.Factory, name, kind string) (*websocket.Conn, error) {
	cfg, err := f.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	_, ns, err := vmClient(f)
	if err != nil {
		return nil, err
	}
	ws, err := dialWebSocket(ctx, cfg, fmt.Sprintf("/apis/apps.cozystack.io/v1alpha1/namespaces/%s/vminstances/%s/%s", ns, name, kind))
	if err != nil {
		return nil, fmt.Errorf("%s of VM %s: %w", kind, name, err)
	}
	return ws, nil
}

// dialWebSocket opens a WebSocket to path on the API server of cfg. The handshake goes through
// client-go's transport wrappers, as every other request of kumo: bearer tokens and token files,
// exec credential plugins, impersonation, the user agent; and through the configured proxy.
func dialWebSocket(ctx context.Context, cfg *rest.Config, path string) (*websocket.Conn, error) {
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	upgrader := &wsRoundTripper{dialer: websocket.Dialer{Proxy: proxy, TLSClientConfig: tlsCfg, HandshakeTimeout: 30 * time.Second,
		ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10}}
	rt, err := rest.HTTPWrappersForConfig(cfg, upgrader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if upgrader.conn == nil {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("%s: %s", resp.Status, apiMessage(body))
	}
	return upgrader.conn, nil
}

// wsRoundTripper performs a WebSocket handshake as the innermost round tripper of client-go's
// wrappers, so that the request carries what they add. A refused handshake is returned as the
// server's response.
type wsRoundTripper struct {
	dialer websocket.Dialer
	conn   *websocket.Conn
}

func (w *wsRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	u := *req.URL
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	case "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("cannot open a WebSocket to %s", req.URL)
	}
	conn, resp, err := w.dialer.DialContext(req.Context(), u.String(), req.Header)
	if err != nil {
		if errors.Is(err, websocket.ErrBadHandshake) && resp != nil {
			return resp, nil
		}
		return nil, err
	}
	w.conn = conn
	return resp, nil
}

// apiMessage extracts the message of a Kubernetes Status body, or returns the body.
func apiMessage(body []byte) string {
	var status struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &status) == nil && status.Message != "" {
		return status.Message
	}
	return strings.TrimSpace(string(body))
}

func newConsoleCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	var showLog bool
	var linger, timeout time.Duration
	var until string
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a VM's serial console (Ctrl+] leaves); --show-log prints what it printed so far",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var marker *untilMarker
			switch {
			case until != "" && showLog:
				return fmt.Errorf("--until waits on the live console; it does not apply to --show-log")
			case until != "":
				marker = newUntilMarker(args[0], until, timeout)
			case cmd.Flags().Changed("timeout"):
				return fmt.Errorf("--timeout needs --until")
			}
			if showLog {
				c, ns, err := vmClient(f)
				if err != nil {
					return err
				}
				res := c.Apps.Get().Namespace(ns).Resource("vminstances").Name(args[0]).SubResource("console").Param("showLog", "true").Do(ctx)
				if err := res.Error(); err != nil {
					return fmt.Errorf("serial log of VM %s: %w", args[0], err)
				}
				data, err := res.Raw()
				if err != nil {
					return fmt.Errorf("serial log of VM %s: %w", args[0], err)
				}
				_, err = streams.Out.Write(data)
				return err
			}
			ws, err := dialStream(ctx, f, args[0], "console")
			if err != nil {
				return err
			}
			defer ws.Close()
			return attachConsole(ws, streams, linger, marker)
		},
	}
	cmd.Flags().BoolVar(&showLog, "show-log", false, "print the serial output kept for the current incarnation and exit")
	cmd.Flags().DurationVar(&linger, "linger", 3*time.Second, "when standard input is not a terminal: how long to keep printing output after it ends (without --until)")
	cmd.Flags().StringVar(&until, "until", "", "exit 0 as soon as the console output contains this string (e.g. a marker your input echoes)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "with --until: fail when the string has not appeared within this time")
	return cmd
}

// attachConsole copies the terminal (raw mode) or a pipe to the console and the console to
// standard output. With a marker it ends when the marker appears (and fails when it does not in
// time); without one, a pipe's end is followed by linger.
func attachConsole(ws *websocket.Conn, streams genericiooptions.IOStreams, linger time.Duration, marker *untilMarker) error {
	inFile, isFile := streams.In.(*os.File)
	interactive := isFile && term.IsTerminal(int(inFile.Fd()))
	if interactive {
		old, err := term.MakeRaw(int(inFile.Fd()))
		if err != nil {
			return err
		}
		defer term.Restore(int(inFile.Fd()), old)
		fmt.Fprint(streams.ErrOut, "Connected. Press Ctrl+] to leave.\r\n")
	}
	done := make(chan error, 2)
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					err = nil
				}
				done <- marker.closed(err)
				return
			}
			if _, err := streams.Out.Write(msg); err != nil {
				done <- err
				return
			}
			if marker.seen(msg) {
				done <- nil
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := streams.In.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if interactive {
					if i := bytes.IndexByte(chunk, escapeByte); i >= 0 {
						_ = ws.WriteMessage(websocket.BinaryMessage, chunk[:i])
						done <- nil
						return
					}
				}
				if werr := ws.WriteMessage(websocket.BinaryMessage, chunk); werr != nil {
					done <- werr
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) && !interactive {
					if marker != nil {
						return // the output ends the command
					}
					time.Sleep(linger)
					done <- nil
					return
				}
				done <- err
				return
			}
		}
	}()
	interrupt := make(chan os.Signal, 1)
	signal.Notify(interrupt, os.Interrupt)
	defer signal.Stop(interrupt)
	select {
	case err := <-done:
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		return err
	case <-interrupt:
		return nil
	case <-marker.expired():
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		return marker.timeoutErr()
	}
}

func newVNCCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	var port int
	var proxyOnly bool
	cmd := &cobra.Command{
		Use:   "vnc NAME",
		Short: "Open a local port speaking plain RFB to a VM's display, for any VNC viewer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			// Fail early when the VM has no display to offer.
			probe, err := dialStream(ctx, f, args[0], "vnc")
			if err != nil {
				return err
			}
			probe.Close()
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return fmt.Errorf("listen on 127.0.0.1:%d: %w", port, err)
			}
			defer ln.Close()
			addr := ln.Addr().(*net.TCPAddr)
			if proxyOnly {
				fmt.Fprintf(streams.Out, "{\"port\":%d}\n", addr.Port)
			} else {
				fmt.Fprintf(streams.Out, "VNC of %s listening on %s; point a VNC viewer at it (Ctrl+C to stop)\n", args[0], addr)
			}
			go func() { <-ctx.Done(); ln.Close() }()
			for {
				conn, err := ln.Accept()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				go func() {
					defer conn.Close()
					ws, err := dialStream(ctx, f, args[0], "vnc")
					if err != nil {
						fmt.Fprintln(streams.ErrOut, err)
						return
					}
					defer ws.Close()
					wsstream.Pipe(ws, conn)
				}()
			}
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "local port (default: a free one)")
	cmd.Flags().BoolVar(&proxyOnly, "proxy-only", false, "only proxy; print the port as JSON, like virtctl")
	return cmd
}
