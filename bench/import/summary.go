package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

type importSample struct {
	class                 string
	plain, plainEnc, kumo time.Duration
}

// noise is a fast pseudo-random stream: data that neither compresses nor has zeros to skip.
type noise struct{ r *rand.ChaCha8 }

func newNoise() *noise { return &noise{r: rand.NewChaCha8([32]byte{'k', 'u', 'm', 'o'})} }

func (n *noise) Read(p []byte) (int, error) { return n.r.Read(p) }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printSummary(o options, imports []importSample, clones map[string][]float64, opens []openCost) {
	fmt.Printf("\nImport of a %s qcow2 image (fully allocated) over loopback HTTP, encrypted with the tenant's key,\n", o.size.String())
	fmt.Printf("vs a plain `qemu-img convert` of the same file to the same kind of target, in the same run:\n\n")
	fmt.Printf("%-11s %12s %12s %12s %10s %10s\n", "class", "plain", "plain+LUKS", "kumo", "vs plain", "vs +LUKS")
	for _, class := range []string{"local", "replicated"} {
		var plain, enc, kumo []float64
		for _, s := range imports {
			if s.class == class {
				plain, enc, kumo = append(plain, s.plain.Seconds()), append(enc, s.plainEnc.Seconds()), append(kumo, s.kumo.Seconds())
			}
		}
		fmt.Printf("%-11s %11.2fs %11.2fs %11.2fs %9.2fx %9.2fx\n", class, median(plain), median(enc), median(kumo),
			median(kumo)/median(plain), median(kumo)/median(enc))
	}
	fmt.Printf("(medians of %d rounds; goal: kumo <= %.2fx the plain conversion)\n", o.rounds, o.importGoal)
	fmt.Printf("\nDisks from a golden image on replicated storage, one tenant (seconds from VM create to disk Ready):\n\n")
	var later = map[string]float64{}
	for _, image := range []string{"small", "big"} {
		times := clones[image]
		var cols []string
		for _, t := range times {
			cols = append(cols, fmt.Sprintf("%.2f", t))
		}
		later[image] = median(times[1:])
		fmt.Printf("%-6s first %s, then %s; median of 2nd and later %.2fs\n", image, cols[0], strings.Join(cols[1:], " "), later[image])
	}
	fmt.Printf("\n2nd and later disks, big image (%s) vs small (kumo-tiny): %.2fx (goal: constant, ~1.0x)\n",
		o.size.String(), later["big"]/later["small"])
	fmt.Printf("\nOpening a disk (qemu-img info: what each VM start pays per disk for key derivation):\n\n")
	for _, c := range opens {
		fmt.Printf("%-11s unencrypted %6.2fs, encrypted as Kumo makes them %6.2fs (+%.2fs)\n", c.class, c.plain.Seconds(), c.encrypted.Seconds(), (c.encrypted - c.plain).Seconds())
	}
}
