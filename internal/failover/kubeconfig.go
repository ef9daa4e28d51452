package failover

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ServersExtension names the kubeconfig cluster extension that lists every API server of the
// cluster. Its cluster's `server:` is the first of them, so a stock kubectl, which ignores the
// extension, still reaches one server (put a load balancer or a DNS name over all servers in
// `server:` to make kubectl survive the loss of that one).
const ServersExtension = "kumo.dev/servers"

// serversList is the extension's content.
type serversList struct {
	Servers []string `json:"servers"`
}

// SetServers points a kubeconfig cluster at servers: `server:` is the first, the extension lists
// all of them.
func SetServers(c *clientcmdapi.Cluster, servers []string) error {
	if len(servers) == 0 {
		return fmt.Errorf("no API server URL given")
	}
	c.Server = servers[0]
	if len(servers) == 1 {
		delete(c.Extensions, ServersExtension)
		return nil
	}
	raw, err := json.Marshal(serversList{Servers: servers})
	if err != nil {
		return err
	}
	if c.Extensions == nil {
		c.Extensions = map[string]runtime.Object{}
	}
	c.Extensions[ServersExtension] = &runtime.Unknown{Raw: raw, ContentType: runtime.ContentTypeJSON}
	return nil
}

// ServersOf reads the servers of a kubeconfig cluster: the extension's list when there is one
// (with `server:` first if the list lacks it), else `server:` alone.
func ServersOf(c *clientcmdapi.Cluster) ([]string, error) {
	ext, ok := c.Extensions[ServersExtension]
	if !ok || ext == nil {
		if c.Server == "" {
			return nil, nil
		}
		return []string{c.Server}, nil
	}
	var raw []byte
	switch e := ext.(type) {
	case *runtime.Unknown:
		raw = e.Raw
	default:
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig extension %s: %w", ServersExtension, err)
		}
		raw = b
	}
	var l serversList
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("kubeconfig extension %s: %w", ServersExtension, err)
	}
	out := l.Servers
	if c.Server != "" && !contains(out, c.Server) {
		out = append([]string{c.Server}, out...)
	}
	return out, nil
}

// KubeconfigServers returns the servers of the current context's cluster of a loaded kubeconfig.
func KubeconfigServers(cc clientcmd.ClientConfig) ([]string, error) {
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, err
	}
	ctxName := raw.CurrentContext
	kctx, ok := raw.Contexts[ctxName]
	if !ok {
		return nil, nil
	}
	cl, ok := raw.Clusters[kctx.Cluster]
	if !ok {
		return nil, nil
	}
	return ServersOf(cl)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
