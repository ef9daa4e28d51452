package pki

// The names the API server and the agents use to recognise each other when the server proxies a
// console or VNC stream to a node: both sides import them from here, so neither imports the other.
const (
	// ServerClientCN is the common name of the client certificate the API server presents to agents.
	ServerClientCN = "kumo-apiserver"
	// AgentServerName is the TLS name in every agent's self-signed serving certificate; the server
	// verifies it against the certificate the node published.
	AgentServerName = "kumo-agent"
)
