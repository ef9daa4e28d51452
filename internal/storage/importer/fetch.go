package importer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"time"
)

// MaxDownload bounds what an import may download or decompress to.
const MaxDownload = int64(256) << 30

// Progress receives how many bytes are done out of total (total 0 when unknown).
type Progress func(done, total int64)

// Fetcher brings an image's bytes (decompressed) into dst, reporting progress.
type Fetcher func(ctx context.Context, dst string, progress Progress) error

// URL fetches from an http(s) URL.
func URL(url string) Fetcher {
	return func(ctx context.Context, dst string, progress Progress) error {
		return Download(ctx, url, dst, progress)
	}
}

// Stream fetches from an opened stream of known (or 0 = unknown) length.
func Stream(open func(ctx context.Context) (io.ReadCloser, int64, error)) Fetcher {
	return func(ctx context.Context, dst string, progress Progress) error {
		rc, total, err := open(ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		return Decompress(ctx, &countingReader{r: rc, total: total, progress: progress}, dst)
	}
}

// Download fetches url into dst, decompressing gzip or xz (recognised by their magic bytes),
// reporting progress over the bytes received.
func Download(ctx context.Context, url, dst string, progress Progress) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return refuse("bad URL %q: %v", url, err)
	}
	resp, err := (&http.Client{Timeout: 0, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: time.Minute}}).Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return refuse("download %s: server answered %s", url, resp.Status)
	}
	counted := &countingReader{r: resp.Body, total: resp.ContentLength, progress: progress}
	return Decompress(ctx, counted, dst)
}

// Decompress copies r into dst, undoing gzip or xz compression when present. dst is a scratch
// file: it is not synced to disk (that would cost about as much as writing it again); a caller
// keeping it across a crash syncs it itself.
func Decompress(ctx context.Context, r io.Reader, dst string) error {
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(6)
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return refuse("corrupt gzip stream: %v", err)
		}
		defer gz.Close()
		src = gz
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		cmd := exec.CommandContext(ctx, "xz", "-dc")
		cmd.Stdin = br
		cmd.Stdout = &limitedWriter{w: f, left: MaxDownload}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return refuse("corrupt xz stream: %s", lastLine(stderr.String()+" "+err.Error()))
		}
		return nil
	}
	n, err := io.Copy(f, io.LimitReader(src, MaxDownload+1))
	if err != nil {
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return refuse("corrupt gzip stream: %v", err)
		}
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if n > MaxDownload {
		return refuse("image is larger than %s", HumanBytes(MaxDownload))
	}
	return nil
}

type countingReader struct {
	r        io.Reader
	done     int64
	total    int64
	progress Progress
	last     time.Time
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.done += int64(n)
	if c.progress != nil && (time.Since(c.last) > 500*time.Millisecond || err == io.EOF) {
		c.last = time.Now()
		c.progress(c.done, c.total)
	}
	return n, err
}

type limitedWriter struct {
	w    io.Writer
	left int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		return 0, refuse("image is larger than %s once decompressed", HumanBytes(MaxDownload))
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}

// Fetch brings an image into path (an OVA's first disk for an OVA) and inspects it, refusing
// what Kumo does not import. Fetching
// reports the first half of progress (0–50%); the caller's conversion reports the second.
func Fetch(ctx context.Context, fetch Fetcher, path string, progress func(percent int)) (Info, error) {
	if err := fetch(ctx, path, func(done, total int64) {
		if total > 0 && progress != nil {
			progress(int(done * 50 / total))
		}
	}); err != nil {
		return Info{}, err
	}
	if err := fromOVA(path); err != nil {
		return Info{}, err
	}
	return Inspect(ctx, path)
}
