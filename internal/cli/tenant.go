package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"kumo.dev/kumo/internal/failover"
	"kumo.dev/kumo/internal/pki"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// tenantReadyTimeout bounds the wait for a new tenant's namespace.
const tenantReadyTimeout = 30 * time.Second

func newTenantCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Create tenants and kubeconfigs for their users"}
	var o tenantKubeconfigOptions
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant (and its namespace tenant-NAME) and print a kubeconfig for a user of it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), f, streams, args[0], true)
		},
	}
	kubeconfig := &cobra.Command{
		Use:   "kubeconfig NAME",
		Short: "Print a kubeconfig for a user of an existing tenant",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), f, streams, args[0], false)
		},
	}
	token := &cobra.Command{
		Use:   "token NAME",
		Short: "Print a bearer token for a user of an existing tenant (to log in to the browser console at /ui/)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.tokenOnly = true
			return o.run(cmd.Context(), f, streams, args[0], false)
		},
	}
	for _, c := range []*cobra.Command{create, kubeconfig, token} {
		c.Flags().StringVar(&o.user, "user", "", "user name the kubeconfig authenticates as (default: NAME-user)")
		c.Flags().StringVarP(&o.output, "output-file", "o", "", "write the kubeconfig to this file (mode 0600) instead of printing it")
		c.Flags().DurationVar(&o.lifetime, "token-lifetime", 0, "lifetime of the user's token (default one year)")
	}
	create.Flags().StringVar(&o.displayName, "display-name", "", "human name of the tenant")
	cmd.AddCommand(create, kubeconfig, token)
	return cmd
}

type tenantKubeconfigOptions struct {
	user, output, displayName string
	lifetime                  time.Duration
	// tokenOnly prints (or writes) the bare token instead of a kubeconfig.
	tokenOnly bool
}

func (o tenantKubeconfigOptions) run(ctx context.Context, f cmdutil.Factory, streams genericiooptions.IOStreams, name string, create bool) error {
	if ctx == nil {
		ctx = context.Background()
	}
	cfg, err := f.ToRESTConfig()
	if err != nil {
		return err
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	if create {
		t := &kumo.Tenant{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: kumo.TenantSpec{DisplayName: o.displayName}}
		if err := c.Kumo.Post().Resource("tenants").Body(t).Do(ctx).Error(); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("tenant %s already exists (kumo tenant kubeconfig %s gives another kubeconfig)", name, name)
			}
			return fmt.Errorf("create tenant %s: %w", name, err)
		}
		fmt.Fprintf(streams.ErrOut, "tenant/%s created\n", name)
	}
	if err := waitTenantActive(ctx, c, name); err != nil {
		return err
	}
	userName := o.user
	if userName == "" {
		userName = name + "-user"
	}
	req := &kumo.TenantToken{Spec: kumo.TenantTokenSpec{User: userName}}
	if o.lifetime > 0 {
		s := int64(o.lifetime.Seconds())
		req.Spec.ExpirationSeconds = &s
	}
	got := &kumo.TenantToken{}
	if err := c.Kumo.Post().Resource("tenants").Name(name).SubResource("token").Body(req).Do(ctx).Into(got); err != nil {
		return fmt.Errorf("issue a token for %s of tenant %s: %w", userName, name, err)
	}
	if o.tokenOnly {
		return o.write(streams, []byte(got.Status.Token+"\n"), "token", userName, name)
	}
	caPEM := cfg.CAData
	if len(caPEM) == 0 && cfg.CAFile != "" {
		if caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
			return fmt.Errorf("read CA file: %w", err)
		}
	}
	// The tenant's kubeconfig lists every API server the admin's does, so it fails over too.
	servers, err := failover.KubeconfigServers(f.ToRawKubeConfigLoader())
	if err != nil || len(servers) == 0 {
		servers = []string{cfg.Host}
	}
	data, err := pki.KubeconfigServers("kumo", servers, caPEM, userName, pki.Credentials{Token: got.Status.Token}, kumo.TenantNamespace(name))
	if err != nil {
		return err
	}
	return o.write(streams, data, "kubeconfig", userName, name)
}

// write prints data (a kubeconfig or a token, what) or writes it to --output-file.
func (o tenantKubeconfigOptions) write(streams genericiooptions.IOStreams, data []byte, what, userName, tenant string) error {
	if o.output == "" {
		_, err := streams.Out.Write(data)
		return err
	}
	if err := os.WriteFile(o.output, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", o.output, err)
	}
	fmt.Fprintf(streams.ErrOut, "%s for %s of tenant %s written to %s (namespace %s)\n", what, userName, tenant, o.output, kumo.TenantNamespace(tenant))
	return nil
}

func waitTenantActive(ctx context.Context, c *client.Client, name string) error {
	var last kumo.Tenant
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, tenantReadyTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Kumo.Get().Resource("tenants").Name(name).Do(ctx).Into(&last); err != nil {
			return false, err
		}
		return last.Status.Phase == kumo.TenantActive, nil
	})
	if err != nil {
		return fmt.Errorf("tenant %s not active (phase %q): %w", name, last.Status.Phase, err)
	}
	return nil
}
