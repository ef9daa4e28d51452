package pki

import (
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"kumo.dev/kumo/internal/failover"
)

// Credentials authenticate a kubeconfig's user: a client certificate or a bearer token.
type Credentials struct {
	ClientCertPEM, ClientKeyPEM []byte
	Token                       string
}

// Kubeconfig builds a one-context kubeconfig for server, trusting caPEM.
func Kubeconfig(cluster, server string, caPEM []byte, userName string, creds Credentials, namespace string) ([]byte, error) {
	return KubeconfigServers(cluster, []string{server}, caPEM, userName, creds, namespace)
}

// KubeconfigServers builds a one-context kubeconfig for a cluster of several API servers: the
// first is the cluster's `server:`, all of them are listed in the kumo.dev/servers extension that
// Kumo's clients fail over between (see internal/failover).
func KubeconfigServers(cluster string, servers []string, caPEM []byte, userName string, creds Credentials, namespace string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	c := &clientcmdapi.Cluster{CertificateAuthorityData: caPEM}
	if err := failover.SetServers(c, servers); err != nil {
		return nil, err
	}
	cfg.Clusters[cluster] = c
	cfg.AuthInfos[userName] = &clientcmdapi.AuthInfo{
		ClientCertificateData: creds.ClientCertPEM,
		ClientKeyData:         creds.ClientKeyPEM,
		Token:                 creds.Token,
	}
	ctx := userName + "@" + cluster
	cfg.Contexts[ctx] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: userName, Namespace: namespace}
	cfg.CurrentContext = ctx
	return clientcmd.Write(*cfg)
}
