package importer

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Target is where an image is converted to.
type Target struct {
	// Args are qemu-img's output arguments: the format and the destination, e.g.
	// ["-O", "qcow2", "/path"] or, for an encrypted or RBD target, ["-n", "--target-image-opts", OPTS].
	Args []string
	// Objects are --object definitions (secrets for encryption).
	Objects []string
}

// ConvertTimeout bounds one qemu-img conversion (a copy of a whole image).
const ConvertTimeout = 6 * time.Hour

// MetadataTimeout bounds a qemu-img command that touches only metadata (info, create, resize,
// rebase): it takes seconds, at most the LUKS key derivation.
const MetadataTimeout = 2 * time.Minute

var progressRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)/100%\)`)

// Convert copies an inspected image into the target with qemu-img, reporting progress in
// percent. The source format is always given explicitly: nothing is probed twice.
func Convert(ctx context.Context, src string, info Info, t Target, progress func(percent int)) error {
	args := []string{"convert", "-p", "-f", info.Format}
	for _, o := range t.Objects {
		args = append(args, "--object", o)
	}
	args = append(args, "file:"+src)
	args = append(args, t.Args...)
	ctx, cancel := context.WithTimeout(ctx, ConvertTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu-img convert: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Split(scanCR)
	for sc.Scan() {
		if m := progressRE.FindStringSubmatch(sc.Text()); m != nil && progress != nil {
			if f, err := strconv.ParseFloat(m[1], 64); err == nil {
				progress(int(f))
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("qemu-img convert: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// scanCR splits qemu-img's progress output, which rewrites one line with \r.
func scanCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\r' || b == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
