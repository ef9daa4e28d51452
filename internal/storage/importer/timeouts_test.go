package importer

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// trickle serves n bytes, one every gap, flushing each.
func trickle(n int, gap time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		for i := 0; i < n; i++ {
			if _, err := w.Write([]byte{0}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(gap):
			}
		}
	}
}

func TestDownloadThatStallsEndsWithTheIdleTimeout(t *testing.T) {
	srv := httptest.NewServer(trickle(100, 3*time.Second))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "dl")
	_, err := Fetch(context.Background(), Source{URL: srv.URL + "/slow.raw", Timeouts: Timeouts{Idle: 300 * time.Millisecond}, Networks: testNets}, dst, nil)
	if !errors.Is(err, ErrIdleTimeout) || !strings.Contains(err.Error(), "idle timeout") || !strings.Contains(err.Error(), "300ms") {
		t.Fatalf("a source sending a byte every 3 s with a 300ms idle timeout: %v", err)
	}
	if IsRefused(err) {
		t.Errorf("a stalled source is not a refused image: %v", err)
	}
}

func TestDownloadThatNeverEndsHitsTheTotalTimeout(t *testing.T) {
	srv := httptest.NewServer(trickle(1000, 50*time.Millisecond))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "dl")
	// Bytes keep coming (well within the idle timeout); the total timeout still ends it.
	_, err := Fetch(context.Background(), Source{URL: srv.URL + "/endless.raw", Timeouts: Timeouts{Idle: 10 * time.Second, Total: time.Second}, Networks: testNets}, dst, nil)
	if !errors.Is(err, ErrTotalTimeout) || errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("want the total timeout: %v", err)
	}
}

func TestDownloadStopsWhenItsContextIsCancelled(t *testing.T) {
	srv := httptest.NewServer(trickle(1000, time.Second))
	defer srv.Close()
	dst := filepath.Join(t.TempDir(), "dl")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(ctx, Source{URL: srv.URL + "/disk.raw", Networks: testNets}, dst, nil) // default timeouts: minutes
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the download start; the outcome does not depend on it
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled download: %v, want context.Canceled wrapped", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the download went on after its context was cancelled")
	}
}

func TestStreamThatStallsEndsWithTheIdleTimeout(t *testing.T) {
	srv := httptest.NewServer(trickle(100, 3*time.Second))
	defer srv.Close()
	old := DefaultTimeouts
	DefaultTimeouts.Idle = 300 * time.Millisecond
	defer func() { DefaultTimeouts = old }()
	dst := filepath.Join(t.TempDir(), "dl")
	_, err := Fetch(context.Background(), Source{Fetch: URL(srv.URL+"/x", testNets)}, dst, nil)
	if !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("URL fetcher under DefaultTimeouts: %v", err)
	}
}
