package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"kumo.dev/kumo/internal/version"
)

// ServerVersion is what GET /kumo/version answers.
type ServerVersion struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
}

func newVersionCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client and server versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(streams.Out, "Client Version: %s (%s)\n", version.Version, version.Commit())
			if clientOnly {
				return nil
			}
			rc, err := f.RESTClient()
			if err != nil {
				return err
			}
			res := rc.Get().AbsPath("/kumo/version").Do(context.Background())
			if err := res.Error(); err != nil {
				return fmt.Errorf("ask the server for its version: %w", err)
			}
			body, err := res.Raw()
			if err != nil {
				return fmt.Errorf("ask the server for its version: %w", err)
			}
			var sv ServerVersion
			if err := json.Unmarshal(body, &sv); err != nil {
				return fmt.Errorf("server version: %w", err)
			}
			fmt.Fprintf(streams.Out, "Server Version: %s (%s)\n", sv.Version, sv.Commit)
			if dc, err := f.ToDiscoveryClient(); err == nil {
				if kv, err := dc.ServerVersion(); err == nil {
					fmt.Fprintf(streams.Out, "Kubernetes API: %s\n", kv.GitVersion)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version")
	return cmd
}
