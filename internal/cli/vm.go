package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// newStateCmds builds kumo start, stop and restart, which call the VM's subresources like
// virtctl: start/stop flip runStrategy Always/Halted or record a request (Manual,
// RerunOnFailure, Once); restart starts a new incarnation.
func newStateCmds(f cmdutil.Factory, streams genericiooptions.IOStreams) []*cobra.Command {
	var out []*cobra.Command
	for _, verb := range []struct{ name, short string }{
		{"start", "Start a VM"}, {"stop", "Stop a VM (ACPI power button, then power off)"}, {"restart", "Restart a VM as a new incarnation"},
	} {
		verb := verb
		out = append(out, &cobra.Command{
			Use:   verb.name + " NAME",
			Short: verb.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, ns, err := vmClient(f)
				if err != nil {
					return err
				}
				body := &apps.VMStateChange{}
				body.APIVersion, body.Kind = apps.SchemeGroupVersion.String(), "VMStateChange"
				if err := c.Apps.Post().Namespace(ns).Resource("vminstances").Name(args[0]).SubResource(verb.name).Body(body).Do(cmd.Context()).Error(); err != nil {
					return fmt.Errorf("%s VM %s: %w", verb.name, args[0], err)
				}
				fmt.Fprintf(streams.Out, "vminstance.apps.cozystack.io/%s %s requested\n", args[0], verb.name)
				return nil
			},
		})
	}
	return out
}

// vmClient returns clients and the namespace the command targets (-n or the kubeconfig's).
func vmClient(f cmdutil.Factory) (*client.Client, string, error) {
	cfg, err := f.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := f.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg)
	return c, ns, err
}
