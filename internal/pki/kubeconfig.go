package pki

import (
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Credentials authenticate a kubeconfig's user: a client certificate or a bearer token.
type Credentials struct {
	ClientCertPEM, ClientKeyPEM []byte
	Token                       string
}

// Kubeconfig builds a one-context kubeconfig for server, trusting caPEM.
func Kubeconfig(cluster, server string, caPEM []byte, userName string, creds Credentials, namespace string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
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
