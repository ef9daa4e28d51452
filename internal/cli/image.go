package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/cmd/get"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	"kumo.dev/kumo/pkg/client"
)

// newImageCmd builds kumo image import (admins) and kumo image list (everyone).
func newImageCmd(f cmdutil.Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Golden images: import (admins) and list"}
	var url, file, os, minSize string
	imp := &cobra.Command{
		Use:   "import NAME (--url URL | --file FILE)",
		Short: "Import a golden image every tenant can start disks from (VMDisk source.image.name)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (url == "") == (file == "") {
				return fmt.Errorf("give exactly one of --url and --file")
			}
			cfg, err := f.ToRESTConfig()
			if err != nil {
				return err
			}
			c, err := client.New(cfg)
			if err != nil {
				return err
			}
			g := &kumo.GoldenImage{ObjectMeta: metav1.ObjectMeta{Name: args[0]}, Spec: kumo.GoldenImageSpec{OS: os}}
			if url != "" {
				g.Spec.Source.HTTP = &kumo.GoldenImageHTTP{URL: url}
			} else {
				g.Spec.Source.Upload = &kumo.GoldenImageUpload{}
			}
			if minSize != "" {
				q, err := resource.ParseQuantity(minSize)
				if err != nil {
					return fmt.Errorf("--min-size: %w", err)
				}
				g.Spec.MinSize = &q
			}
			if err := c.Kumo.Post().Resource("goldenimages").Body(g).Do(cmd.Context()).Error(); err != nil {
				return fmt.Errorf("create golden image %s: %w", args[0], err)
			}
			fmt.Fprintf(streams.ErrOut, "goldenimage.kumo.dev/%s created\n", args[0])
			if file == "" {
				fmt.Fprintln(streams.Out, "nodes download it from "+url+"; kumo image list shows its phase")
				return nil
			}
			msg, err := uploadFile(cmd.Context(), streams, c.Kumo.Post().Resource("goldenimages").Name(args[0]).SubResource("upload"), file)
			if err != nil {
				return fmt.Errorf("upload golden image %s: %w", args[0], err)
			}
			fmt.Fprintln(streams.Out, "goldenimage.kumo.dev/"+args[0]+": "+msg)
			return nil
		},
	}
	imp.Flags().StringVar(&url, "url", "", "download the image from this http(s) URL (on each node)")
	imp.Flags().StringVar(&file, "file", "", "upload the image from this file")
	imp.Flags().StringVar(&os, "os", "", "operating system, e.g. debian")
	imp.Flags().StringVar(&minSize, "min-size", "", "smallest disk the image fits on, e.g. 2Gi")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the golden images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g := get.NewCmdGet("kumo", f, streams)
			g.SetArgs([]string{"goldenimages"})
			g.SetContext(cmd.Context())
			return g.Execute()
		},
	}
	cmd.AddCommand(imp, list)
	return cmd
}
