// Package apiserver serves Kumo's Kubernetes-compatible API: the Hikube kinds (VMDisk,
// VMInstance), Kumo's platform kinds (InstanceType, InstanceProfile, Tenant, Node) and the core
// Namespace and Event kinds, on k8s.io/apiserver with objects kept in etcd. kubectl and client-go
// work against it unchanged.
package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/request/union"
	x509request "k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	genericfilters "k8s.io/apiserver/pkg/server/filters"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/util/compatibility"
	restclient "k8s.io/client-go/rest"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"kumo.dev/kumo/internal/auth"
	"kumo.dev/kumo/internal/pki"
	"kumo.dev/kumo/internal/version"
	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
	generatedopenapi "kumo.dev/kumo/pkg/generated/openapi"
)

// etcdPrefix is where Kumo keeps its objects in etcd.
const etcdPrefix = "/registry/kumo"

// Config is everything the API server needs to start.
type Config struct {
	// PKIDir holds the CA, the serving certificate and the token key.
	PKIDir string
	// BindAddress and Port are where HTTPS is served.
	BindAddress net.IP
	Port        int
	// AdvertiseAddress is the address clients reach the server at; it goes into the serving
	// certificate and the discovery documents.
	AdvertiseAddress string
	// ExtraSANs are more names or IPs for the serving certificate.
	ExtraSANs []string
	// EtcdServers are the etcd client URLs; the storage client fails over between them.
	EtcdServers []string
	// EtcdTLS, when set, is the client certificate and CA the storage reaches etcd with.
	EtcdTLS *EtcdTLS
}

// EtcdTLS are the files of a TLS connection to etcd.
type EtcdTLS struct{ CAFile, CertFile, KeyFile string }

// Server is a configured API server, ready to run.
type Server struct {
	generic *genericapiserver.GenericAPIServer
	CA      *pki.CA
	Signer  *auth.Signer
	stores  *stores
	pkiDir  string
	// agentClientCert is what the server presents to agents when it proxies streams.
	agentClientCert tls.Certificate
}

func agentClientCertificate(ca *pki.CA) (tls.Certificate, error) {
	pair, err := ca.Issue(pki.ServerClientCN, []string{"kumo:apiserver"}, nil, nil, false)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate for agents: %w", err)
	}
	return tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
}

// URL is where clients reach a server with this configuration.
func (c Config) URL() string {
	return "https://" + net.JoinHostPort(c.AdvertiseAddress, strconv.Itoa(c.Port))
}

// New builds the API server: certificates, authentication, authorization, admission, storage
// of every kind, and the start-up hook that seeds built-in objects. What else runs beside the
// API (the controllers) is the daemon's to add with OnStarted.
func New(cfg Config) (*Server, error) {
	ca, err := pki.LoadOrCreateCA(cfg.PKIDir)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	dnsNames, ips := servingNames(cfg)
	certFile, keyFile, err := ca.EnsureServerCert(cfg.PKIDir, dnsNames, ips)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	signer, err := auth.LoadOrCreateSigner(filepath.Join(cfg.PKIDir, "token.key"))
	if err != nil {
		return nil, err
	}

	opts := genericoptions.NewRecommendedOptions(etcdPrefix, Codecs.LegacyCodec(apps.SchemeGroupVersion, kumo.SchemeGroupVersion, corev1.SchemeGroupVersion, coordinationv1.SchemeGroupVersion))
	opts.Etcd.StorageConfig.Transport.ServerList = cfg.EtcdServers
	if t := cfg.EtcdTLS; t != nil {
		opts.Etcd.StorageConfig.Transport.TrustedCAFile = t.CAFile
		opts.Etcd.StorageConfig.Transport.CertFile = t.CertFile
		opts.Etcd.StorageConfig.Transport.KeyFile = t.KeyFile
	}
	opts.Etcd.DefaultStorageMediaType = "application/json"
	if opts.Etcd.EncryptionProviderConfigFilepath, err = encryptionConfig(cfg.PKIDir); err != nil {
		return nil, fmt.Errorf("encryption at rest: %w", err)
	}
	opts.SecureServing.BindAddress = cfg.BindAddress
	opts.SecureServing.BindPort = cfg.Port
	opts.SecureServing.ServerCert.CertKey = genericoptions.CertKey{CertFile: certFile, KeyFile: keyFile}
	// Kumo brings its own authentication, authorization and admission, and has no core
	// Kubernetes API behind it for priority and fairness to read.
	opts.Authentication, opts.Authorization, opts.CoreAPI, opts.Admission = nil, nil, nil, nil
	opts.Features.EnablePriorityAndFairness = false
	if errs := opts.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("server options: %v", errs)
	}

	config := genericapiserver.NewRecommendedConfig(Codecs)
	config.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()
	if err := opts.ApplyTo(config); err != nil {
		return nil, fmt.Errorf("apply server options: %w", err)
	}
	config.ExternalAddress = net.JoinHostPort(cfg.AdvertiseAddress, strconv.Itoa(cfg.Port))
	// Console and VNC streams live as long as the user stays attached.
	config.LongRunningFunc = genericfilters.BasicLongRunningRequestCheck(sets.NewString("watch", "proxy"), sets.NewString("console", "vnc", "upload", "proxy", "log"))
	namer := openapi.NewDefinitionNamer(Scheme)
	config.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(generatedopenapi.GetOpenAPIDefinitions, namer)
	config.OpenAPIConfig.Info.Title, config.OpenAPIConfig.Info.Version = "Kumo", "v1alpha1"
	config.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, namer)
	config.OpenAPIV3Config.Info.Title, config.OpenAPIV3Config.Info.Version = "Kumo", "v1alpha1"

	st := &stores{}
	tokens := &auth.TokenAuthenticator{Signer: signer, Tenants: st.tenantUID, Nodes: st.nodeLive}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	certAuth := x509request.New(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, x509request.CommonNameUserConversion)
	config.Authentication.Authenticator = group.NewAuthenticatedGroupAdder(union.New(certAuth, bearertoken.New(tokens)))
	clientCA, err := dynamiccertificates.NewStaticCAContent("kumo-ca", ca.CertPEM)
	if err != nil {
		return nil, err
	}
	config.SecureServing.ClientCA = clientCA
	config.Authorization.Authorizer = auth.Authorizer()
	lk := &lookups{}
	config.AdmissionControl = &admissionChecks{l: lk}

	generic, err := config.Complete().New("kumo-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("create API server: %w", err)
	}
	if err := st.build(config.RESTOptionsGetter, lk); err != nil {
		return nil, err
	}
	*lk = st.lookups()
	s := &Server{generic: generic, CA: ca, Signer: signer, stores: st, pkiDir: cfg.PKIDir}
	if s.agentClientCert, err = agentClientCertificate(ca); err != nil {
		return nil, err
	}
	if err := s.install(); err != nil {
		return nil, err
	}
	s.installVersion()
	s.installNoCRDs()
	generic.AddPostStartHookOrDie("kumo-bootstrap", func(ctx genericapiserver.PostStartHookContext) error {
		return bootstrap(ctx, ctx.LoopbackClientConfig)
	})
	return s, nil
}

// install registers every kind's storage under its group and version.
func (s *Server) install() error {
	st := s.stores
	diskUploads, imageUploads, err := s.uploads(filepath.Join(filepath.Dir(s.pkiDir), "uploads"))
	if err != nil {
		return err
	}
	agents := newAgentTransports(s.agentClientCert)
	lk := st.lookups()
	appsInfo := genericapiserver.NewDefaultAPIGroupInfo(apps.GroupName, Scheme, runtime.NewParameterCodec(Scheme), Codecs)
	appsInfo.VersionedResourcesStorageMap[apps.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"vminstances": &vmStorage{st.gate.gated(st.vmInstances)}, "vminstances/status": st.vmInstances.Status,
		"vminstances/start":   &vmAction{action: "start", vms: st.vmInstances},
		"vminstances/stop":    &vmAction{action: "stop", vms: st.vmInstances},
		"vminstances/restart": &vmAction{action: "restart", vms: st.vmInstances},
		"vminstances/console": &vmStream{kind: "console", vms: st.vmInstances, nodes: st.nodes, agents: agents},
		"vminstances/vnc":     &vmStream{kind: "vnc", vms: st.vmInstances, nodes: st.nodes, agents: agents},
		"vminstances/diskkey": vmDiskKey(st.vmInstances, st.tenantKeys),
		"vmdisks":             &nodeScopedDisks{gatedStorage: st.gate.gated(st.vmDisks), l: &lk}, "vmdisks/status": st.vmDisks.Status,
		"vmdisks/upload":  diskUploads,
		"vmdisks/diskkey": placedDiskKey(st.vmDisks, st.tenantKeys),
	}
	if err := s.generic.InstallAPIGroup(&appsInfo); err != nil {
		return fmt.Errorf("install %s: %w", apps.GroupName, err)
	}
	kumoInfo := genericapiserver.NewDefaultAPIGroupInfo(kumo.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	kumoInfo.VersionedResourcesStorageMap[kumo.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"instancetypes": st.instanceTypes, "instanceprofiles": st.instanceProfiles,
		"tenants": st.tenants, "tenants/status": st.tenants.Status,
		"tenants/token": &tenantTokenREST{tenants: st.tenants, signer: s.Signer},
		"nodes":         st.nodes, "nodes/status": st.nodes.Status,
		"nodes/token":         &nodeTokenREST{nodes: st.nodes, signer: s.Signer},
		"tenantkeys":          st.tenantKeys,
		"goldenimages":        st.goldenImages,
		"goldenimages/status": st.goldenImages.Status,
		"goldenimages/upload": imageUploads,
	}
	if err := s.generic.InstallAPIGroup(&kumoInfo); err != nil {
		return fmt.Errorf("install %s: %w", kumo.GroupName, err)
	}
	coreInfo := genericapiserver.NewDefaultAPIGroupInfo("", Scheme, metav1.ParameterCodec, Codecs)
	coreInfo.VersionedResourcesStorageMap["v1"] = map[string]rest.Storage{
		"namespaces": st.namespaces, "namespaces/status": st.namespaces.Status,
		"events": st.gate.gated(st.events),
	}
	if err := s.generic.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, &coreInfo); err != nil {
		return fmt.Errorf("install core group: %w", err)
	}
	coordInfo := genericapiserver.NewDefaultAPIGroupInfo(coordinationv1.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	coordInfo.VersionedResourcesStorageMap[coordinationv1.SchemeGroupVersion.Version] = map[string]rest.Storage{"leases": st.leases}
	if err := s.generic.InstallAPIGroup(&coordInfo); err != nil {
		return fmt.Errorf("install %s: %w", coordinationv1.GroupName, err)
	}
	return nil
}

// IssueNodeKubeconfig writes a kubeconfig that authenticates as node name (for the agent of an
// all-in-one machine, which shares the server's data directory). Like kumo node kubeconfig, it
// registers the Node (in datacenter) when it does not exist and binds the token to its UID. The
// kubeconfig lists servers (this server's URL first), which the agent fails over between.
func (s *Server) IssueNodeKubeconfig(ctx context.Context, path string, servers []string, name, datacenter string) error {
	issuer := &nodeTokenREST{nodes: s.stores.nodes, signer: s.Signer, datacenter: datacenter}
	var token string
	var last error
	// The server may still be starting (its storage not answering yet): retry for a while.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		token, _, last = issuer.issue(ctx, name, defaultNodeTokenLifetime)
		if last != nil {
			slog.Debug("issue the node token (retrying)", "node", name, "err", last)
		}
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("issue the token of node %s: %w (last attempt: %v)", name, err, last)
	}
	data, err := pki.KubeconfigServers("kumo", servers, s.CA.CertPEM, auth.NodeUserPrefix+name, pki.Credentials{Token: token}, "")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// OnStarted runs fn once the server serves, with a loopback client configuration that has every
// right (the daemon starts its controllers this way); fn must not block. Call before Run.
func (s *Server) OnStarted(name string, fn func(ctx context.Context, loopback *restclient.Config) error) error {
	return s.generic.AddPostStartHook(name, func(ctx genericapiserver.PostStartHookContext) error {
		return fn(ctx, ctx.LoopbackClientConfig)
	})
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	return s.generic.PrepareRun().RunWithContext(ctx)
}

func servingNames(cfg Config) ([]string, []net.IP) {
	dns := []string{"localhost", "kumo-apiserver"}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if h, err := os.Hostname(); err == nil {
		dns = append(dns, h)
	}
	for _, n := range append([]string{cfg.AdvertiseAddress}, cfg.ExtraSANs...) {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else if n != "" {
			dns = append(dns, n)
		}
	}
	if cfg.BindAddress != nil && !cfg.BindAddress.IsUnspecified() {
		ips = append(ips, cfg.BindAddress)
	}
	return dns, ips
}

// installVersion serves GET /kumo/version: the Kumo build behind the Kubernetes-style /version.
func (s *Server) installVersion() {
	body, _ := json.Marshal(map[string]string{"version": version.Version, "commit": version.Commit()})
	s.generic.Handler.NonGoRestfulMux.HandleFunc("/kumo/version", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// installNoCRDs answers kubectl's probe for CustomResourceDefinitions (it lists them when a
// manifest names a kind the OpenAPI lacks) with the truth: Kumo serves none. kubectl then
// reports the unknown kind itself ("no matches for kind ...") instead of a failed probe.
func (s *Server) installNoCRDs() {
	const body = `{"kind":"CustomResourceDefinitionList","apiVersion":"apiextensions.k8s.io/v1","metadata":{},"items":[]}`
	s.generic.Handler.NonGoRestfulMux.HandleFunc("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "Kumo serves no CustomResourceDefinitions", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	})
}
