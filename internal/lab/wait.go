package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// restConfigFor builds a client configuration from kubeconfig aimed at url (empty: the
// kubeconfig's own server).
func restConfigFor(kubeconfig, url string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags(url, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = 5 * time.Second
	return cfg, nil
}

// Readyz asks the server at url for /readyz with the credentials of kubeconfig; nil means 200.
func Readyz(ctx context.Context, kubeconfig, url string) error {
	return Get(ctx, kubeconfig, url, "/readyz")
}

// Get GETs path from the server at url (not another) with the credentials of kubeconfig, within
// 5 s; nil means 200.
func Get(ctx context.Context, kubeconfig, url, path string) error {
	cfg, err := restConfigFor(kubeconfig, url)
	if err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s%s: %s", url, path, resp.Status)
	}
	return nil
}

// waitReadyz waits until the server answers /readyz (its kubeconfig appears at its first start).
func waitReadyz(ctx context.Context, kubeconfig, url string, p *Process) error {
	var last error
	for {
		if p != nil && !p.Alive() {
			return fmt.Errorf("kumod server exited")
		}
		if last = Readyz(ctx, kubeconfig, url); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %v: %w", last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Nodes lists the lab's Node objects through kumo (as an operator would).
func (s *State) ListNodes(ctx context.Context) ([]kumo.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "kumo"), "--kubeconfig", s.Kubeconfig, "get", "nodes", "-o", "json")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("kumo get nodes: %w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("kumo get nodes: %w", err)
	}
	var list kumo.NodeList
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("decode kumo get nodes: %w", err)
	}
	return list.Items, nil
}

// NodeReady tells whether a Node's Ready condition is True.
func NodeReady(n *kumo.Node) bool {
	return meta.IsStatusConditionTrue(n.Status.Conditions, kumo.NodeConditionReady)
}

// WaitNodesReady waits until every node of the lab is Ready in its datacenter.
func WaitNodesReady(ctx context.Context, s *State, timeout time.Duration) error {
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	return WaitNodes(ctx, s, names, true, timeout)
}

// WaitNodes waits until each named node's readiness is ready.
func WaitNodes(ctx context.Context, s *State, names []string, ready bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var why string
	for {
		nodes, err := s.ListNodes(ctx)
		if err != nil {
			why = err.Error()
		} else {
			var wrong []string
			for _, name := range names {
				i := slices.IndexFunc(nodes, func(n kumo.Node) bool { return n.Name == name })
				switch {
				case i < 0:
					wrong = append(wrong, name+" (not registered)")
				case NodeReady(&nodes[i]) != ready:
					wrong = append(wrong, name)
				default:
					if want := datacenterOf(s, name); nodes[i].Spec.Datacenter != want {
						wrong = append(wrong, fmt.Sprintf("%s (datacenter %q, want %q)", name, nodes[i].Spec.Datacenter, want))
					}
				}
			}
			if len(wrong) == 0 {
				return nil
			}
			why = fmt.Sprintf("Ready=%v not yet: %s", ready, strings.Join(wrong, ", "))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes: %s: %w", why, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func datacenterOf(s *State, node string) string {
	if n, err := s.Node(node); err == nil {
		return n.Datacenter
	}
	return ""
}
