package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/failover"
	"kumo.dev/kumo/internal/pki"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

func newNodeCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Manage node credentials"}
	var output string
	kc := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Print (or write with -o) the credentials a node's agent uses (kumod agent --kubeconfig)",
		Long: "Print (or write with -o) the credentials a node's agent uses (kumod agent --kubeconfig).\n\n" +
			"The Node is registered now if it does not exist (not Ready until its agent reports), and the credential is bound to it: " +
			"kumo delete node NAME revokes every credential issued for the node, also once a Node of that name is registered again.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.ToRESTConfig()
			if err != nil {
				return err
			}
			c, err := client.New(cfg)
			if err != nil {
				return err
			}
			got := &kumo.NodeToken{}
			if err := c.Kumo.Post().Resource("nodes").Name(args[0]).SubResource("token").Body(&kumo.NodeToken{}).Do(cmd.Context()).Into(got); err != nil {
				return fmt.Errorf("issue a token for node %s: %w", args[0], err)
			}
			caPEM := cfg.CAData
			if len(caPEM) == 0 && cfg.CAFile != "" {
				if caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
					return err
				}
			}
			// The node's agent fails over between the servers this kubeconfig lists.
			servers, err := failover.KubeconfigServers(f.ToRawKubeConfigLoader())
			if err != nil {
				return err
			}
			if len(servers) == 0 {
				servers = []string{cfg.Host}
			}
			data, err := pki.KubeconfigServers("kumo", servers, caPEM, auth.NodeUserPrefix+args[0], pki.Credentials{Token: got.Status.Token}, "")
			if err != nil {
				return err
			}
			if output == "" {
				_, err = streams.Out.Write(data)
				return err
			}
			return os.WriteFile(output, data, 0o600)
		},
	}
	kc.Flags().StringVarP(&output, "output-file", "o", "", "write to this file (mode 0600)")
	cmd.AddCommand(kc)
	return cmd
}
