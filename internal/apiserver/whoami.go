package apiserver

import (
	"encoding/json"
	"net/http"

	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"kumo.dev/kumo/internal/auth"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// WhoAmIPath answers an authenticated user with who the server takes it for: the browser
// console learns from it which tenant (and so which namespace) a token belongs to.
const WhoAmIPath = "/kumo/whoami"

// WhoAmI is the answer of WhoAmIPath.
type WhoAmI struct {
	User   string   `json:"user"`
	Groups []string `json:"groups,omitempty"`
	// Tenant and Namespace are empty for users of no tenant (admins, nodes).
	Tenant    string `json:"tenant,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Admin     bool   `json:"admin"`
}

// installWhoAmI serves GET /kumo/whoami (authorized for any authenticated user, see
// auth.Decide).
func (s *Server) installWhoAmI() {
	s.generic.Handler.NonGoRestfulMux.HandleFunc(WhoAmIPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "only GET", http.StatusMethodNotAllowed)
			return
		}
		u, ok := genericapirequest.UserFrom(r.Context())
		if !ok {
			http.Error(w, "no authenticated user", http.StatusUnauthorized)
			return
		}
		me := WhoAmI{User: u.GetName(), Groups: u.GetGroups(), Tenant: auth.TenantOf(u), Admin: auth.IsAdmin(u)}
		if me.Tenant != "" {
			me.Namespace = kumo.TenantNamespace(me.Tenant)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(me)
	})
}
