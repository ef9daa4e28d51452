// Command kubectl is kubectl built from the k8s.io/kubectl module at the same minor version as
// Kumo's Kubernetes libraries. The compatibility tests run it against Kumo; nothing else does.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	cli.Run(cmd.NewDefaultKubectlCommand())
}
