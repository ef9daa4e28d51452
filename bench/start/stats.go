package main

import (
	"fmt"
	"slices"
	"time"

	"kumo.dev/kumo/bench/internal/kumoserver"
)

// dist is the distribution of one measure.
type dist struct {
	n                  int
	min, p50, p95, max time.Duration
}

func distOf(d []time.Duration) dist {
	if len(d) == 0 {
		return dist{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return dist{n: len(s), min: s[0], p50: kumoserver.Percentile(s, 50), p95: kumoserver.Percentile(s, 95), max: s[len(s)-1]}
}

// ms formats a duration in milliseconds with one decimal.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// signedMS formats a difference with its sign.
func signedMS(d time.Duration) string {
	return fmt.Sprintf("%+.1fms", float64(d)/float64(time.Millisecond))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func (d dist) row(name string) string {
	return fmt.Sprintf("%-34s %4d  %10s %10s %10s %10s", name, d.n, ms(d.min), ms(d.p50), ms(d.p95), ms(d.max))
}

// column extracts one measure of every sample.
func column[T any](samples []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = f(s)
	}
	return out
}
