package cli

import (
	"fmt"
	"os"
	"sync"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

	"kumo.dev/kumo/internal/failover"
)

// failoverConfig makes every client of the command fail over between the API servers of the
// kubeconfig's cluster (its kumo.dev/servers extension), unless --server names one. One list is
// shared by all clients of the process, so a server found dead is skipped by the next request.
func failoverConfig(flags *genericclioptions.ConfigFlags) func(*rest.Config) *rest.Config {
	var once sync.Once
	var servers *failover.Servers
	return func(cfg *rest.Config) *rest.Config {
		if flags.APIServer != nil && *flags.APIServer != "" {
			return cfg
		}
		once.Do(func() {
			urls, err := failover.KubeconfigServers(flags.ToRawKubeConfigLoader())
			if err != nil {
				fmt.Fprintln(os.Stderr, "kumo: API servers of the kubeconfig:", err)
				return
			}
			if len(urls) < 2 {
				return
			}
			if servers, err = failover.NewServers(urls); err != nil {
				fmt.Fprintln(os.Stderr, "kumo: API servers of the kubeconfig:", err)
			}
		})
		if servers == nil {
			return cfg
		}
		failover.Configure(cfg, servers)
		return cfg
	}
}
