package auth

import (
	"log/slog"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
)

const (
	// invalidTokenLogBurst invalid tokens are logged at once, then one per invalidTokenLogEvery;
	// the others are counted and the count is logged with the next line.
	invalidTokenLogBurst = 10
	invalidTokenLogEvery = 6 * time.Second
)

// invalidTokenLogger is where refused tokens are reported; tests replace it.
var invalidTokenLogger = slog.Default

// invalidTokenLog rate-limits the log lines of refused tokens: anyone can send invalid tokens,
// so they must not flood the log (nor reach ERROR, where the API server's authentication filter
// would log every error an authenticator returns).
type invalidTokenLog struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

// allow takes a token from the bucket; it returns false (and counts the line) when empty.
func (l *invalidTokenLog) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = invalidTokenLogBurst
	} else {
		l.tokens += float64(now.Sub(l.last)) / float64(invalidTokenLogEvery)
		if l.tokens > invalidTokenLogBurst {
			l.tokens = invalidTokenLogBurst
		}
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// invalid refuses a token that is not valid: not authenticated (401), without an error (an error
// would be logged at ERROR by the filter), and logged at INFO, rate-limited.
func (a *TokenAuthenticator) invalid(reason error) (*authenticator.Response, bool, error) {
	if ok, suppressed := a.log.allow(time.Now()); ok {
		invalidTokenLogger().Info("bearer token refused", "reason", reason.Error(), "suppressedSinceLast", suppressed)
	}
	return nil, false, nil
}
