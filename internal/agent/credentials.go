package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Node tokens expire (a week by default) and the agent renews its own well before: it asks
// nodes/<node>/token for a new one at start and every CredentialRenewPeriod, uses it at once and
// writes it into its kubeconfig, so that a restarted agent starts with a valid token. A token
// bound to a deleted Node is not renewed: the server refuses the request.

// CredentialRenewPeriod is how often the agent renews its node token.
var CredentialRenewPeriod = 12 * time.Hour

// bearer holds the token every request of the agent carries; renewals replace it.
type bearer struct {
	mu    sync.RWMutex
	token string
}

func (b *bearer) get() string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.token
}

func (b *bearer) set(t string) {
	b.mu.Lock()
	b.token = t
	b.mu.Unlock()
}

// useRenewableToken moves cfg's bearer token into a holder that renewals update; nil when cfg
// authenticates otherwise (a client certificate).
func useRenewableToken(cfg *rest.Config) *bearer {
	if cfg.BearerToken == "" {
		return nil
	}
	b := &bearer{token: cfg.BearerToken}
	cfg.BearerToken = ""
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Header.Get("Authorization") == "" {
				req = req.Clone(req.Context())
				req.Header.Set("Authorization", "Bearer "+b.get())
			}
			return rt.RoundTrip(req)
		})
	})
	return b
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// renewCredentials renews the node token now and every CredentialRenewPeriod until ctx ends.
func (a *Agent) renewCredentials(ctx context.Context) {
	if a.token == nil {
		return
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 10 * time.Second, Factor: 2, Steps: 8, Cap: 10 * time.Minute},
			func(ctx context.Context) (bool, error) {
				if err := a.renewToken(ctx); err != nil {
					slog.Warn("renew the node token (will retry)", "node", a.opts.Node, "err", err)
					return false, nil
				}
				return true, nil
			})
		if err != nil && ctx.Err() == nil {
			slog.Error("could not renew the node token", "node", a.opts.Node, "err", err)
		}
	}, CredentialRenewPeriod)
}

// renewToken asks for a new token, uses it and writes it into the kubeconfig.
func (a *Agent) renewToken(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	got := &kumo.NodeToken{}
	if err := a.c.Kumo.Post().Resource("nodes").Name(a.opts.Node).SubResource("token").Body(&kumo.NodeToken{}).Do(ctx).Into(got); err != nil {
		return fmt.Errorf("request a token for node %s: %w", a.opts.Node, err)
	}
	if got.Status.Token == "" {
		return fmt.Errorf("the server returned no token for node %s", a.opts.Node)
	}
	a.token.set(got.Status.Token)
	if err := writeKubeconfigToken(a.opts.Kubeconfig, got.Status.Token); err != nil {
		return fmt.Errorf("the renewed token is in use but a restarted agent would not have it: %w", err)
	}
	slog.Info("node token renewed", "node", a.opts.Node, "expires", got.Status.ExpirationTimestamp.Time)
	return nil
}

// writeKubeconfigToken replaces the token of the kubeconfig's current user, atomically.
func writeKubeconfigToken(path, token string) error {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return fmt.Errorf("read node kubeconfig %s: %w", path, err)
	}
	kctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok || cfg.AuthInfos[kctx.AuthInfo] == nil {
		return fmt.Errorf("node kubeconfig %s: current context %q names no user", path, cfg.CurrentContext)
	}
	cfg.AuthInfos[kctx.AuthInfo].Token = token
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode node kubeconfig %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".node-kubeconfig-*")
	if err != nil {
		return fmt.Errorf("write node kubeconfig %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write node kubeconfig %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write node kubeconfig %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write node kubeconfig %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace node kubeconfig %s: %w", path, err)
	}
	return nil
}
