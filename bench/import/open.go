package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// openCost times opening an encrypted disk the way Kumo makes them (what every VM start pays per
// disk for key derivation) against opening the same kind of disk unencrypted.
type openCost struct {
	class            string
	plain, encrypted time.Duration
}

func measureOpens(ctx context.Context, dir, cephConf, cephUser, pool string) ([]openCost, error) {
	key := filepath.Join(dir, "open.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef0123456789ab"), 0o600); err != nil {
		return nil, err
	}
	sec := "secret,id=s,file=" + key
	local, localEnc := filepath.Join(dir, "open.qcow2"), filepath.Join(dir, "open-enc.qcow2")
	rbdPlain, rbdEnc := pool+"/bench-open", pool+"/bench-open-enc"
	rbd := func(args ...string) error {
		out, err := exec.CommandContext(ctx, "rbd", append([]string{"-c", cephConf, "--id", cephUser}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rbd %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	defer func() {
		rbd("rm", "--no-progress", rbdPlain)
		rbd("rm", "--no-progress", rbdEnc)
	}()
	setup := [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", local, "1G"},
		// As internal/storage/local makes them: qcow2's LUKS, iter-time 10 ms.
		{"qemu-img", "create", "-q", "-f", "qcow2", "--object", sec, "-o", "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10", localEnc, "1G"},
	}
	for _, s := range setup {
		if err := runPBKDF(ctx, s...); err != nil {
			return nil, err
		}
	}
	for _, img := range []string{rbdPlain, rbdEnc} {
		if err := rbd("create", "--size", "1G", img); err != nil {
			return nil, err
		}
	}
	// As internal/storage/ceph makes them: `rbd encryption format ... luks2`.
	if err := rbd("encryption", "format", rbdEnc, "luks2", key); err != nil {
		return nil, err
	}
	rbdOpts := func(img string) string {
		p, name, _ := strings.Cut(img, "/")
		return fmt.Sprintf("driver=rbd,pool=%s,image=%s,conf=%s,user=%s", p, name, cephConf, cephUser)
	}
	open := func(opts string, encrypted bool) (time.Duration, error) {
		args := []string{"info", "--image-opts", opts}
		if encrypted {
			args = []string{"info", "--object", sec, "--image-opts", opts}
		}
		t0 := time.Now()
		if out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("qemu-img %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return time.Since(t0), nil
	}
	var out []openCost
	for _, c := range []struct{ class, plain, enc string }{
		{"local", "driver=qcow2,file.filename=" + local, "driver=qcow2,file.filename=" + localEnc + ",encrypt.key-secret=s"},
		{"replicated", rbdOpts(rbdPlain), rbdOpts(rbdEnc) + ",encrypt.format=luks2,encrypt.key-secret=s"},
	} {
		p, err := open(c.plain, false)
		if err != nil {
			return nil, err
		}
		e, err := open(c.enc, true)
		if err != nil {
			return nil, err
		}
		out = append(out, openCost{class: c.class, plain: p, encrypted: e})
	}
	return out, nil
}
