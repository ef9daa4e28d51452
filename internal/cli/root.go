// Package cli implements the kumo command. The kubectl-like verbs (apply, get, describe, delete,
// explain, api-resources) are kubectl's own implementations from k8s.io/kubectl, so flags and
// output behave exactly as in kubectl; Kumo's own verbs (tenant, version, and later console,
// vnc, ssh, start/stop) sit beside them. Kubeconfig comes from --kubeconfig, $KUBECONFIG, then
// ~/.kube/config.
package cli

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/cmd/apiresources"
	"k8s.io/kubectl/pkg/cmd/apply"
	"k8s.io/kubectl/pkg/cmd/delete"
	"k8s.io/kubectl/pkg/cmd/describe"
	"k8s.io/kubectl/pkg/cmd/explain"
	"k8s.io/kubectl/pkg/cmd/get"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// FieldManager is the server-side apply field manager of kumo apply.
const FieldManager = "kumo"

// NewRoot builds the kumo command tree writing to streams.
func NewRoot(streams genericiooptions.IOStreams) *cobra.Command {
	root := &cobra.Command{
		Use:           "kumo",
		Short:         "Kumo: virtual machines on a multi-tenant cloud",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	configFlags := genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300).WithDiscoveryQPS(50)
	configFlags.AddFlags(root.PersistentFlags())
	configFlags.WrapConfigFn = failoverConfig(configFlags)
	f := cmdutil.NewFactory(cmdutil.NewMatchVersionFlags(configFlags))

	applyCmd := apply.NewCmdApply("kumo", f, streams)
	setDefault(applyCmd, "server-side", "true")
	setDefault(applyCmd, "field-manager", FieldManager)
	applyCmd.Short = "Apply manifests (server-side apply) from files, a directory or stdin (-f -)"

	root.AddCommand(
		applyCmd,
		get.NewCmdGet("kumo", f, streams),
		describe.NewCmdDescribe("kumo", f, streams),
		delete.NewCmdDelete(f, streams),
		explain.NewCmdExplain("kumo", f, streams),
		apiresources.NewCmdAPIResources(f, streams),
		newTenantCmd(f, streams),
		newNodeCmd(f, streams),
		newConsoleCmd(f, streams),
		newVNCCmd(f, streams),
		newUploadCmd(f, streams),
		newImageCmd(f, streams),
		newVersionCmd(f, streams),
	)
	root.AddCommand(newStateCmds(f, streams)...)
	return root
}

// setDefault changes a flag's default value, as shown in help too.
func setDefault(cmd *cobra.Command, name, value string) {
	fl := cmd.Flags().Lookup(name)
	if fl == nil {
		panic("kumo: no flag " + name + " on " + cmd.Name())
	}
	if err := fl.Value.Set(value); err != nil {
		panic(err)
	}
	fl.DefValue = value
}
