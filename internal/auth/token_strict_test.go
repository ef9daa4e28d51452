package auth

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func TestSignatureHasExactlyOneSpelling(t *testing.T) {
	s := newSigner(t)
	tok := mustSign(t, s, NodeClaims("n1", "uid-n1", testNow.Add(time.Hour)))
	// A 32-byte HMAC is 43 base64 characters, whose last carries 2 unused bits: the three other
	// characters sharing its 4 used bits decode to the same bytes unless decoding is strict.
	last := strings.IndexByte(b64url, tok[len(tok)-1])
	accepted := 0
	for low := 0; low < 4; low++ {
		variant := tok[:len(tok)-1] + string(b64url[last&^3|low])
		if _, err := s.Verify(variant, testNow); err == nil {
			accepted++
		} else if variant == tok {
			t.Fatalf("the token as issued: %v", err)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d spellings of the signature verify, want 1", accepted)
	}
}

func TestTokenLifetimeIsBoundedAndNeverOverflows(t *testing.T) {
	path := field.NewPath("spec", "expirationSeconds")
	i := func(v int64) *int64 { return &v }
	if d, err := Lifetime(nil, 24*time.Hour, MaxTokenLifetime, path); err != nil || d != 24*time.Hour {
		t.Errorf("default: %v %v", d, err)
	}
	for _, ok := range []int64{600, 3600, 31536000} {
		if d, err := Lifetime(&ok, 0, MaxTokenLifetime, path); err != nil || d != time.Duration(ok)*time.Second {
			t.Errorf("%d: %v %v", ok, d, err)
		}
	}
	for _, bad := range []*int64{i(599), i(0), i(-1), i(31536001), i(9223372037), i(9300000000000), i(math.MaxInt64), i(math.MinInt64)} {
		_, err := Lifetime(bad, 0, MaxTokenLifetime, path)
		if err == nil || err.Field != "spec.expirationSeconds" || !strings.Contains(err.Detail, "between 600") || !strings.Contains(err.Detail, "31536000") {
			t.Errorf("%d: %v, want a refusal naming the bounds", *bad, err)
		}
	}
}

func TestVerifyRefusesTokensLivingLongerThanAllowed(t *testing.T) {
	s := newSigner(t)
	// What expirationSeconds: 9300000000000 issued before lifetimes were bounded.
	tok := mustSign(t, s, NodeClaims("n1", "uid-n1", time.Date(2116, 1, 1, 0, 0, 0, 0, time.UTC)))
	if _, err := s.Verify(tok, testNow); err == nil || !strings.Contains(err.Error(), "lifetime") {
		t.Fatalf("token valid until 2116: %v", err)
	}
	tok = mustSign(t, s, NodeClaims("n1", "uid-n1", testNow.Add(MaxTokenLifetime)))
	if _, err := s.Verify(tok, testNow); err != nil {
		t.Fatalf("token of the longest lifetime: %v", err)
	}
}

// recordHandler keeps the records logged.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestInvalidTokensAreLoggedBelowErrorAndRateLimited(t *testing.T) {
	h := &recordHandler{}
	old := invalidTokenLogger
	invalidTokenLogger = func() *slog.Logger { return slog.New(h) }
	defer func() { invalidTokenLogger = old }()
	s, other := newSigner(t), newSigner(t)
	forged := mustSign(t, other, NodeClaims("n1", "uid-n1", time.Now().Add(time.Hour)))
	a := &TokenAuthenticator{Signer: s}
	for n := 0; n < 200; n++ {
		resp, ok, err := a.AuthenticateToken(context.Background(), forged)
		if resp != nil || ok || err != nil {
			t.Fatalf("forged token: %v %v %v (an error would be logged at ERROR by the API server)", resp, ok, err)
		}
	}
	if len(h.records) == 0 || len(h.records) > invalidTokenLogBurst+1 {
		t.Fatalf("200 invalid tokens gave %d log lines, want 1..%d", len(h.records), invalidTokenLogBurst+1)
	}
	for _, r := range h.records {
		if r.Level >= slog.LevelWarn {
			t.Errorf("logged at %v: %s", r.Level, r.Message)
		}
	}
	// Once the bucket refills, the next line counts what was left out.
	a.log.mu.Lock()
	a.log.last = a.log.last.Add(-time.Hour)
	a.log.mu.Unlock()
	a.AuthenticateToken(context.Background(), forged)
	lastRec := h.records[len(h.records)-1]
	var suppressed int64
	lastRec.Attrs(func(at slog.Attr) bool {
		if at.Key == "suppressedSinceLast" {
			suppressed = at.Value.Int64()
		}
		return true
	})
	if suppressed != int64(200-invalidTokenLogBurst) {
		t.Errorf("the line after the pause says %d were suppressed, want %d", suppressed, 200-invalidTokenLogBurst)
	}
}
