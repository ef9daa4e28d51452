package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
)

// tokenPrefix versions the token format.
const tokenPrefix = "kumo1"

// Claims is what a token says about its bearer.
type Claims struct {
	User   string   `json:"u"`
	Groups []string `json:"g,omitempty"`
	// Tenant and TenantUID bind a tenant user's token to one incarnation of the tenant: a deleted
	// and recreated tenant does not honour old tokens.
	Tenant    string `json:"t,omitempty"`
	TenantUID string `json:"tu,omitempty"`
	Expiry    int64  `json:"exp"`
	ID        string `json:"jti"`

	// NodeUID binds a node agent's token to one incarnation of its Node object: deleting the
	// Node revokes every token issued for it, and a Node created again under the same name has
	// a new UID that old tokens do not carry.
	NodeUID string `json:"nu,omitempty"`
}

// Signer issues and verifies tokens with one secret key.
type Signer struct{ key []byte }

// LoadOrCreateSigner reads the key at path, creating a random one (mode 0600) on first use.
func LoadOrCreateSigner(path string) (*Signer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, key, 0o600); err != nil {
			return nil, fmt.Errorf("write token key %s: %w", path, err)
		}
		return &Signer{key: key}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read token key %s: %w", path, err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("token key %s is too short (%d bytes, want 32)", path, len(key))
	}
	return &Signer{key: key}, nil
}

// Sign returns a token carrying c.
func (s *Signer) Sign(c Claims) (string, error) {
	if c.ID == "" {
		id := make([]byte, 12)
		if _, err := rand.Read(id); err != nil {
			return "", err
		}
		c.ID = base64.RawURLEncoding.EncodeToString(id)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	payload := tokenPrefix + "." + base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), nil
}

func (s *Signer) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// ErrNotOurs says a token is not in Kumo's format, so another authenticator may try it.
var ErrNotOurs = errors.New("not a kumo token")

// Verify checks a token's signature and expiry and returns its claims.
func (s *Signer) Verify(token string, now time.Time) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != tokenPrefix {
		return Claims{}, ErrNotOurs
	}
	// Strict: a signature has exactly one spelling (the unused low bits of the last character
	// must be zero), so a token cannot be altered and still verify.
	sig, err := strictBase64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, s.mac(parts[0]+"."+parts[1])) {
		return Claims{}, errors.New("token signature is invalid")
	}
	body, err := strictBase64.DecodeString(parts[1])
	if err != nil {
		return Claims{}, errors.New("token is malformed")
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return Claims{}, errors.New("token is malformed")
	}
	if now.Unix() >= c.Expiry {
		return Claims{}, errors.New("token has expired")
	}
	if c.Expiry-now.Unix() > int64((MaxTokenLifetime+tokenClockSlack)/time.Second) {
		// Issued before lifetimes were bounded (an expirationSeconds that overflowed): never
		// honoured.
		return Claims{}, errors.New("token claims a lifetime longer than allowed")
	}
	return c, nil
}

// strictBase64 is the encoding of every part of a token, decoded strictly.
var strictBase64 = base64.RawURLEncoding.Strict()

const (
	// MinTokenLifetime and MaxTokenLifetime bound the lifetime of every token issued.
	MinTokenLifetime = 10 * time.Minute
	MaxTokenLifetime = 365 * 24 * time.Hour
	// tokenClockSlack tolerates an issuing server's clock a little ahead of the verifying one's.
	tokenClockSlack = 24 * time.Hour
)

// Lifetime is the lifetime a token request asks for (expirationSeconds, nil for def), refused
// outside [MinTokenLifetime, max] — checked before any arithmetic, so no value overflows into
// another lifetime. The error names path.
func Lifetime(seconds *int64, def, max time.Duration, path *field.Path) (time.Duration, *field.Error) {
	if seconds == nil {
		return def, nil
	}
	lo, hi := int64(MinTokenLifetime/time.Second), int64(max/time.Second)
	if *seconds < lo || *seconds > hi {
		return 0, field.Invalid(path, *seconds, fmt.Sprintf("must be between %d (10 minutes) and %d seconds (%s)", lo, hi, humanDays(max)))
	}
	return time.Duration(*seconds) * time.Second, nil
}

func humanDays(d time.Duration) string {
	days := int64(d / (24 * time.Hour))
	if days == 365 {
		return "one year"
	}
	return fmt.Sprintf("%d days", days)
}

// TenantLookup returns the UID of a live tenant, or false when there is none by that name.
type TenantLookup func(ctx context.Context, name string) (uid string, ok bool, err error)

// NodeLookup says whether Node name exists with UID uid and is not being deleted.
type NodeLookup func(ctx context.Context, name, uid string) (live bool, err error)

// TokenAuthenticator authenticates bearer tokens the Signer issued.
type TokenAuthenticator struct {
	Signer  *Signer
	Tenants TenantLookup
	Nodes   NodeLookup
	Now     func() time.Time

	// log reports refused tokens, rate-limited (see invalid).
	log invalidTokenLog
}

var _ authenticator.Token = &TokenAuthenticator{}

// AuthenticateToken implements authenticator.Token.
func (a *TokenAuthenticator) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	c, err := a.Signer.Verify(token, now())
	if errors.Is(err, ErrNotOurs) {
		return nil, false, nil
	}
	if err != nil {
		return a.invalid(err)
	}
	if c.Tenant != "" {
		uid, ok, err := a.Tenants(ctx, c.Tenant)
		if err != nil {
			// The server's failure, not the caller's: an error, logged as one.
			return nil, false, fmt.Errorf("look up tenant %s: %w", c.Tenant, err)
		}
		if !ok || uid != c.TenantUID {
			return a.invalid(fmt.Errorf("tenant %s of this token no longer exists", c.Tenant))
		}
	}
	if node, ok := nodeOfClaims(c); ok {
		refused, err := a.nodeLive(ctx, node, c.NodeUID)
		if err != nil {
			return nil, false, err // the server's failure, logged as one
		}
		if refused != nil {
			return a.invalid(refused)
		}
	}
	return &authenticator.Response{User: &user.DefaultInfo{Name: c.User, Groups: c.Groups, UID: c.ID}}, true, nil
}

// nodeOfClaims returns the node a token speaks for, if it is a node token.
func nodeOfClaims(c Claims) (string, bool) {
	for _, g := range c.Groups {
		if g == GroupNodes {
			return strings.TrimPrefix(c.User, NodeUserPrefix), true
		}
	}
	return "", false
}

// nodeLive checks that the Node a node token was issued for still exists as the same object:
// refused says why the caller's token is not honoured, err is the server's own failure.
func (a *TokenAuthenticator) nodeLive(ctx context.Context, node, uid string) (refused, err error) {
	if uid == "" {
		return fmt.Errorf("token of node %s is bound to no Node object: issue a new one (kumo node kubeconfig %s)", node, node), nil
	}
	if a.Nodes == nil {
		return nil, fmt.Errorf("token of node %s cannot be checked: this server has no node lookup", node)
	}
	live, err := a.Nodes(ctx, node, uid)
	if err != nil {
		return nil, fmt.Errorf("look up node %s: %w", node, err)
	}
	if !live {
		return fmt.Errorf("node %s of this token no longer exists (deleted or registered again): issue a new one", node), nil
	}
	return nil, nil
}

// TenantClaims are the claims of a token for user of tenant.
func TenantClaims(userName, tenant, tenantUID string, expiry time.Time) Claims {
	return Claims{
		User:      userName,
		Groups:    []string{GroupTenantPrefix + tenant, GroupTenants},
		Tenant:    tenant,
		TenantUID: tenantUID,
		Expiry:    expiry.Unix(),
	}
}

// NodeClaims are the claims of a node agent's token, bound to the Node object with nodeUID.
func NodeClaims(node, nodeUID string, expiry time.Time) Claims {
	return Claims{User: NodeUserPrefix + node, Groups: []string{GroupNodes}, NodeUID: nodeUID, Expiry: expiry.Unix()}
}
