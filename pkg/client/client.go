package client

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	appsv1alpha1 "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumov1alpha1 "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// Client reaches every group Kumo serves.
type Client struct {
	// Apps is apps.cozystack.io/v1alpha1 (VMDisk, VMInstance).
	Apps rest.Interface
	// Kumo is kumo.dev/v1alpha1 (InstanceType, InstanceProfile, Tenant, Node).
	Kumo rest.Interface
	// Core is the core group (Namespace, Event).
	Core kubernetes.Interface
	// Config is the configuration the clients were made from.
	Config *rest.Config
}

// New makes clients for every group from one configuration.
func New(cfg *rest.Config) (*Client, error) {
	appsClient, err := groupClient(cfg, appsv1alpha1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	kumoClient, err := groupClient(cfg, kumov1alpha1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("core client: %w", err)
	}
	return &Client{Apps: appsClient, Kumo: kumoClient, Core: core, Config: cfg}, nil
}

func groupClient(cfg *rest.Config, gv schema.GroupVersion) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &gv
	c.APIPath = "/apis"
	c.NegotiatedSerializer = Codecs.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", gv, err)
	}
	return rc, nil
}
