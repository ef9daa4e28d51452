package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func newSigner(t *testing.T) *Signer {
	t.Helper()
	s, err := LoadOrCreateSigner(filepath.Join(t.TempDir(), "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSign(t *testing.T, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestSignerRoundTrip(t *testing.T) {
	s := newSigner(t)
	cases := []struct {
		name   string
		claims Claims
	}{
		{"tenant user", TenantClaims("alice", "acme", "uid-1", testNow.Add(time.Hour))},
		{"node", NodeClaims("n1", "uid-n1", testNow.Add(time.Hour))},
		{"explicit id is kept", Claims{User: "bob", Expiry: testNow.Add(time.Minute).Unix(), ID: "fixed-id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := mustSign(t, s, tc.claims)
			if !strings.HasPrefix(tok, "kumo1.") || strings.Count(tok, ".") != 2 {
				t.Fatalf("token %q is not kumo1.PAYLOAD.SIG", tok)
			}
			got, err := s.Verify(tok, testNow)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := tc.claims
			if want.ID == "" {
				if got.ID == "" {
					t.Error("Sign should give the token a random ID")
				}
				want.ID = got.ID
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("claims = %+v, want %+v", got, want)
			}
		})
	}
}

func TestSignerGivesEachTokenItsOwnID(t *testing.T) {
	s := newSigner(t)
	c := NodeClaims("n1", "uid-n1", testNow.Add(time.Hour))
	a, b := mustSign(t, s, c), mustSign(t, s, c)
	if a == b {
		t.Fatal("two tokens with the same claims are identical; want distinct IDs")
	}
	ca, _ := s.Verify(a, testNow)
	cb, _ := s.Verify(b, testNow)
	if ca.ID == "" || ca.ID == cb.ID {
		t.Errorf("IDs %q and %q should be distinct and non-empty", ca.ID, cb.ID)
	}
}

// reencode returns tok with its payload replaced by the JSON of c, keeping the old signature.
func reencode(t *testing.T, tok string, edit func(*Claims)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	edit(&c)
	body, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(body)
	return strings.Join(parts, ".")
}

func TestSignerRejects(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t)
	good := mustSign(t, s, TenantClaims("alice", "acme", "uid-1", testNow.Add(time.Hour)))
	parts := strings.Split(good, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	flipped := bytes.Clone(sig)
	flipped[0] ^= 1

	cases := []struct {
		name    string
		token   string
		now     time.Time
		notOurs bool
		errText string
	}{
		{name: "escalated groups in the payload", token: reencode(t, good, func(c *Claims) { c.Groups = []string{"system:masters"} }), now: testNow, errText: "signature"},
		{name: "another tenant in the payload", token: reencode(t, good, func(c *Claims) { c.Tenant = "other" }), now: testNow, errText: "signature"},
		{name: "extended expiry in the payload", token: reencode(t, good, func(c *Claims) { c.Expiry += 3600 * 24 * 365 }), now: testNow, errText: "signature"},
		{name: "one bit of the signature flipped", token: parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(flipped), now: testNow, errText: "signature"},
		{name: "signature cut short", token: good[:len(good)-4], now: testNow, errText: "signature"},
		{name: "signature not base64", token: parts[0] + "." + parts[1] + ".!!!", now: testNow, errText: "signature"},
		{name: "empty signature", token: parts[0] + "." + parts[1] + ".", now: testNow, errText: "signature"},
		{name: "signed by another key", token: mustSign(t, other, TenantClaims("alice", "acme", "uid-1", testNow.Add(time.Hour))), now: testNow, errText: "signature"},
		{name: "expired an hour ago", token: good, now: testNow.Add(2 * time.Hour), errText: "expired"},
		{name: "expired exactly now", token: good, now: testNow.Add(time.Hour), errText: "expired"},
		{name: "a JWT is not ours", token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", now: testNow, notOurs: true},
		{name: "a plain string is not ours", token: "abc123", now: testNow, notOurs: true},
		{name: "an empty token is not ours", token: "", now: testNow, notOurs: true},
		{name: "a kumo prefix with two parts is not ours", token: parts[0] + "." + parts[1], now: testNow, notOurs: true},
		{name: "a kumo token with four parts is not ours", token: good + ".x", now: testNow, notOurs: true},
		{name: "a future format version is not ours", token: "kumo2." + parts[1] + "." + parts[2], now: testNow, notOurs: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := s.Verify(tc.token, tc.now)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", c)
			}
			if tc.notOurs != errors.Is(err, ErrNotOurs) {
				t.Fatalf("Verify error = %v, ErrNotOurs wanted: %v", err, tc.notOurs)
			}
			if !tc.notOurs && !strings.Contains(err.Error(), tc.errText) {
				t.Errorf("Verify error = %q, want it to mention %q", err, tc.errText)
			}
			if !reflect.DeepEqual(c, Claims{}) {
				t.Errorf("a rejected token still returned claims %+v", c)
			}
		})
	}
	if _, err := s.Verify(good, testNow.Add(time.Hour-time.Second)); err != nil {
		t.Errorf("token one second before expiry was rejected: %v", err)
	}
}

func TestLoadOrCreateSigner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	s1, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file was not created: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	if fi.Size() != 32 {
		t.Errorf("key file holds %d bytes, want 32", fi.Size())
	}
	key1, _ := os.ReadFile(path)

	tok := mustSign(t, s1, NodeClaims("n1", "uid-n1", testNow.Add(time.Hour)))
	s2, err := LoadOrCreateSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Verify(tok, testNow); err != nil {
		t.Errorf("a reloaded signer rejects a token of the first: %v", err)
	}
	if key2, _ := os.ReadFile(path); !bytes.Equal(key1, key2) {
		t.Error("reloading rewrote the key")
	}
	if _, err := s1.Verify(mustSign(t, s2, NodeClaims("n2", "uid-n2", testNow.Add(time.Hour))), testNow); err != nil {
		t.Errorf("the first signer rejects a token of the reloaded one: %v", err)
	}

	s3, err := LoadOrCreateSigner(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Verify(tok, testNow); err == nil {
		t.Error("a freshly created key verifies another key's token: keys are not random")
	}
}

func TestLoadOrCreateSignerErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, make([]byte, 31), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSigner(short); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("a 31-byte key: err = %v, want too short", err)
	}
	if _, err := LoadOrCreateSigner(dir); err == nil {
		t.Error("a directory as key path was accepted")
	}
	if _, err := LoadOrCreateSigner(filepath.Join(dir, "missing", "token.key")); err == nil {
		t.Error("a key in a missing directory was accepted")
	}
}

type lookup struct {
	uids  map[string]string
	err   error
	calls []string
}

func (l *lookup) fn(_ context.Context, name string) (string, bool, error) {
	l.calls = append(l.calls, name)
	if l.err != nil {
		return "", false, l.err
	}
	uid, ok := l.uids[name]
	return uid, ok, nil
}

func TestTokenAuthenticator(t *testing.T) {
	s := newSigner(t)
	other := newSigner(t)
	exp := testNow.Add(time.Hour)
	tenantTok := mustSign(t, s, TenantClaims("alice", "acme", "uid-1", exp))
	nodeTok := mustSign(t, s, NodeClaims("n1", "uid-n1", exp))

	cases := []struct {
		name       string
		token      string
		tenants    map[string]string
		nodes      map[string]string
		nodeErr    error
		lookupErr  error
		wantOK     bool
		wantErr    bool
		wantUser   string
		wantGroups []string
		wantLookup []string
	}{
		{
			name: "tenant token of a live tenant with the same UID is accepted", token: tenantTok,
			tenants: map[string]string{"acme": "uid-1"}, wantOK: true,
			wantUser: "alice", wantGroups: []string{"kumo:tenant:acme", "kumo:tenants"}, wantLookup: []string{"acme"},
		},
		{
			name: "tenant token of a deleted tenant is rejected", token: tenantTok,
			tenants: map[string]string{}, wantLookup: []string{"acme"},
		},
		{
			name: "tenant token of a recreated tenant (other UID) is rejected", token: tenantTok,
			tenants: map[string]string{"acme": "uid-2"}, wantLookup: []string{"acme"},
		},
		{
			name: "tenant lookup failure is an error", token: tenantTok,
			lookupErr: errors.New("etcd down"), wantErr: true, wantLookup: []string{"acme"},
		},
		{
			name: "node token of its live Node needs no tenant lookup", token: nodeTok, nodes: map[string]string{"n1": "uid-n1"}, wantOK: true,
			wantUser: "kumo:node:n1", wantGroups: []string{"kumo:nodes"},
		},
		{name: "node token of a deleted Node is refused", token: nodeTok, nodes: map[string]string{}},
		{name: "node token of a Node registered again (other UID) is refused", token: nodeTok, nodes: map[string]string{"n1": "uid-other"}},
		{
			name: "node token bound to no Node is refused", token: mustSign(t, s, Claims{User: "kumo:node:n1", Groups: []string{GroupNodes}, Expiry: exp.Unix()}),
			nodes: map[string]string{"n1": "uid-n1"},
		},
		{name: "node lookup failure is an error", token: nodeTok, nodeErr: errors.New("etcd down"), wantErr: true},
		{name: "non-kumo token is left to other authenticators", token: "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"},
		// Refusals of the caller's token are not errors: the API server's filter would log each
		// at ERROR. They are 401s, logged at INFO, rate-limited.
		{name: "token from another key is refused", token: mustSign(t, other, NodeClaims("n1", "uid-n1", exp))},
		{name: "expired token is refused", token: mustSign(t, s, NodeClaims("n1", "uid-n1", testNow.Add(-time.Second)))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := &lookup{uids: tc.tenants, err: tc.lookupErr}
			nl := &lookup{uids: tc.nodes, err: tc.nodeErr}
			nodes := func(ctx context.Context, name, uid string) (bool, error) {
				got, ok, err := nl.fn(ctx, name)
				return ok && got == uid, err
			}
			a := &TokenAuthenticator{Signer: s, Tenants: l.fn, Nodes: nodes, Now: func() time.Time { return testNow }}
			resp, ok, err := a.AuthenticateToken(context.Background(), tc.token)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tc.wantOK)
			}
			if !reflect.DeepEqual(l.calls, tc.wantLookup) {
				t.Errorf("tenant lookups = %v, want %v", l.calls, tc.wantLookup)
			}
			if !tc.wantOK {
				if resp != nil {
					t.Errorf("rejected token returned a response %+v", resp)
				}
				return
			}
			u := resp.User
			if u.GetName() != tc.wantUser || !reflect.DeepEqual(u.GetGroups(), tc.wantGroups) {
				t.Errorf("user = %q %v, want %q %v", u.GetName(), u.GetGroups(), tc.wantUser, tc.wantGroups)
			}
			c, _ := s.Verify(tc.token, testNow)
			if u.GetUID() == "" || u.GetUID() != c.ID {
				t.Errorf("user UID = %q, want the token ID %q", u.GetUID(), c.ID)
			}
		})
	}
}

func TestTokenAuthenticatorUsesTheClock(t *testing.T) {
	s := newSigner(t)
	tok := mustSign(t, s, NodeClaims("n1", "uid-n1", testNow.Add(time.Hour)))
	a := &TokenAuthenticator{Signer: s, Now: func() time.Time { return testNow.Add(2 * time.Hour) }}
	if _, ok, err := a.AuthenticateToken(context.Background(), tok); ok || err != nil {
		t.Errorf("token checked against the injected clock should be expired: ok=%v err=%v", ok, err)
	}
	// Without a clock it uses the real time: a token that expired in 2000 is rejected.
	a = &TokenAuthenticator{Signer: s}
	old := mustSign(t, s, NodeClaims("n1", "uid-n1", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)))
	if _, ok, err := a.AuthenticateToken(context.Background(), old); ok || err != nil {
		t.Errorf("token expired in 2000 accepted with the real clock: ok=%v err=%v", ok, err)
	}
}

func TestClaimsConstructors(t *testing.T) {
	exp := testNow.Add(time.Hour)
	tc := TenantClaims("alice", "acme", "uid-1", exp)
	want := Claims{User: "alice", Groups: []string{"kumo:tenant:acme", "kumo:tenants"}, Tenant: "acme", TenantUID: "uid-1", Expiry: exp.Unix()}
	if !reflect.DeepEqual(tc, want) {
		t.Errorf("TenantClaims = %+v, want %+v", tc, want)
	}
	nc := NodeClaims("n1", "uid-n1", exp)
	want = Claims{User: "kumo:node:n1", Groups: []string{"kumo:nodes"}, NodeUID: "uid-n1", Expiry: exp.Unix()}
	if !reflect.DeepEqual(nc, want) {
		t.Errorf("NodeClaims = %+v, want %+v", nc, want)
	}
}
