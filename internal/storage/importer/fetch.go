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

// Timeouts bound a download. A source that stalls (or trickles a byte now and then) must not
// hold an import, and the worker running it, for ever.
type Timeouts struct {
	// Idle ends a download when no byte arrived for this long.
	Idle time.Duration
	// Total ends a download that takes longer than this altogether.
	Total time.Duration
	// Header bounds the wait for the server's response headers.
	Header time.Duration
}

// DefaultTimeouts are the timeouts of every download unless a caller sets its own: two minutes
// without a byte, six hours in all (a 60 GiB image at 3 MB/s), one minute for the headers.
var DefaultTimeouts = Timeouts{Idle: 2 * time.Minute, Total: 6 * time.Hour, Header: time.Minute}

// ErrIdleTimeout is wrapped by a download that received nothing for Timeouts.Idle.
var ErrIdleTimeout = errors.New("idle timeout")

// ErrTotalTimeout is wrapped by a download that took longer than Timeouts.Total.
var ErrTotalTimeout = errors.New("total timeout")

func (t Timeouts) orDefault() Timeouts {
	if t.Idle <= 0 {
		t.Idle = DefaultTimeouts.Idle
	}
	if t.Total <= 0 {
		t.Total = DefaultTimeouts.Total
	}
	if t.Header <= 0 {
		t.Header = DefaultTimeouts.Header
	}
	return t
}

// URL fetches from an http(s) URL with DefaultTimeouts, connecting only where nets allow.
func URL(url string, nets Networks) Fetcher {
	return func(ctx context.Context, dst string, progress Progress) error {
		return Download(ctx, url, nets, dst, progress)
	}
}

// Stream fetches from an opened stream of known (or 0 = unknown) length, under DefaultTimeouts.
func Stream(open func(ctx context.Context) (io.ReadCloser, int64, error)) Fetcher {
	return StreamAtMost(open, Limit{})
}

// StreamAtMost is Stream writing at most limit bytes (decompressed).
func StreamAtMost(open func(ctx context.Context) (io.ReadCloser, int64, error), limit Limit) Fetcher {
	return func(ctx context.Context, dst string, progress Progress) error {
		t := DefaultTimeouts
		ctx, w := watch(ctx, t)
		defer w.stop()
		rc, total, err := open(ctx)
		if err != nil {
			return w.explain("open stream", err)
		}
		defer rc.Close()
		return w.explain("stream", DecompressAtMost(ctx, w.reader(&countingReader{r: rc, total: total, progress: progress}), dst, limit))
	}
}

// Download fetches url into dst under DefaultTimeouts, decompressing gzip or xz (recognised by
// their magic bytes), reporting progress over the bytes received. It connects only to addresses
// nets allows.
func Download(ctx context.Context, url string, nets Networks, dst string, progress Progress) error {
	_, err := download(ctx, url, nets, dst, progress, DefaultTimeouts, Limit{})
	return err
}

// download is Download under the given timeouts; it returns the response's Content-Type.
func download(ctx context.Context, url string, nets Networks, dst string, progress Progress, t Timeouts, limit Limit) (string, error) {
	if err := CheckURL(url); err != nil {
		return "", err
	}
	shown := redact(url)
	t = t.orDefault()
	ctx, w := watch(ctx, t)
	defer w.stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", refuse("bad URL %s: %v", shown, redactErr(err))
	}
	hc := nets.client(t.Header)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		if w.ctx.Err() == nil {
			err = addressRefusal(url, err)
		}
		return "", w.explain("download "+shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", refuse("download %s: server answered %s", shown, resp.Status)
	}
	counted := &countingReader{r: resp.Body, total: resp.ContentLength, progress: progress}
	return resp.Header.Get("Content-Type"), w.explain("download "+shown, DecompressAtMost(ctx, w.reader(counted), dst, limit))
}

// watchdog cancels a transfer's context when no byte arrived for the idle timeout or when the
// total timeout passed, and tells which.
type watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	idle   time.Duration
	timer  *time.Timer
	total  context.CancelFunc
	t      Timeouts
}

func watch(parent context.Context, t Timeouts) (context.Context, *watchdog) {
	t = t.orDefault()
	totalCtx, totalCancel := context.WithTimeoutCause(parent, t.Total, fmt.Errorf("%w: not done after %v", ErrTotalTimeout, t.Total))
	ctx, cancel := context.WithCancelCause(totalCtx)
	w := &watchdog{ctx: ctx, cancel: cancel, idle: t.Idle, total: totalCancel, t: t}
	w.timer = time.AfterFunc(t.Idle, func() {
		cancel(fmt.Errorf("%w: no data received for %v", ErrIdleTimeout, t.Idle))
	})
	return ctx, w
}

func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel(nil)
	w.total()
}

// reader resets the idle timer whenever bytes arrive.
func (w *watchdog) reader(r io.Reader) io.Reader { return &idleReader{r: r, w: w} }

type idleReader struct {
	r io.Reader
	w *watchdog
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.w.timer.Reset(r.w.idle)
	}
	return n, err
}

// explain replaces the error of a transfer its context ended (a timeout or the caller's
// cancellation) with that cause.
func (w *watchdog) explain(what string, err error) error {
	if err == nil {
		return nil
	}
	if w.ctx.Err() != nil {
		if cause := context.Cause(w.ctx); cause != nil {
			return fmt.Errorf("%s: %w", what, cause)
		}
	}
	if IsRefused(err) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Decompress copies r into dst, undoing gzip or xz compression when present. dst is a scratch
// file: it is not synced to disk (that would cost about as much as writing it again); a caller
// keeping it across a crash syncs it itself.
func Decompress(ctx context.Context, r io.Reader, dst string) error {
	return DecompressAtMost(ctx, r, dst, Limit{})
}

// DecompressAtMost is Decompress writing at most limit bytes: once the (decompressed) image
// exceeds it, it stops with a TooLargeError.
func DecompressAtMost(ctx context.Context, r io.Reader, dst string, limit Limit) error {
	limit = limit.orDefault()
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(6)
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var out io.Writer = f
	charged := &chargedWriter{w: f, charge: limit.Charge}
	if limit.Charge != nil {
		out = charged
	}
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
		lw := &limitedWriter{w: out, left: limit.Bytes, limit: limit}
		cmd.Stdout = lw
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); lw.exceeded {
			return limit.exceeded()
		} else if charged.err != nil {
			return charged.err
		} else if err != nil {
			return refuse("corrupt xz stream: %s", lastLine(stderr.String()+" "+err.Error()))
		}
		return nil
	}
	n, err := io.Copy(out, io.LimitReader(src, limit.Bytes))
	if charged.err != nil {
		return charged.err
	}
	if err == nil && n == limit.Bytes {
		// At the limit: one more byte means the image is larger (and is not written).
		var one [1]byte
		k, rerr := io.ReadFull(src, one[:])
		if k > 0 {
			return limit.exceeded()
		}
		if rerr != io.EOF {
			err = rerr // a corrupt stream's end (a gzip checksum) is still caught below
		}
	}
	if err != nil {
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
			return refuse("corrupt gzip stream: %v", err)
		}
		return fmt.Errorf("write %s: %w", dst, err)
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
	w        io.Writer
	left     int64
	limit    Limit
	exceeded bool
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		l.exceeded = true
		return 0, l.limit.exceeded()
	}
	l.left -= int64(len(p))
	return l.w.Write(p)
}

// Source is where an import's bytes come from and what it claims they are.
type Source struct {
	// URL is downloaded (http or https) unless Fetch is set.
	URL string
	// Fetch brings the bytes some other way (an upload staged on the API server).
	Fetch Fetcher
	// Name is the source's file name when it has no URL ("" when unknown): its extension
	// claims a format.
	Name string
	// Timeouts bound a download (zero fields: DefaultTimeouts).
	Timeouts Timeouts
	// Networks are the addresses a download may connect to (zero: no internal address).
	Networks Networks
	// Limit bounds the image's bytes once decompressed (zero: MaxDownload); a disk's import
	// passes ForDisk(spec.storage).
	Limit Limit
}

// Fetch brings an image into path (an OVA's first disk for an OVA) and inspects it, refusing
// what Kumo does not import — including content whose format is not the one its name or the
// server's Content-Type claims. Fetching reports the first half of progress (0–50%); the
// caller's conversion reports the second.
func Fetch(ctx context.Context, src Source, path string, progress func(percent int)) (Info, error) {
	report := func(done, total int64) {
		if total > 0 && progress != nil {
			progress(int(done * 50 / total))
		}
	}
	name, contentType := src.Name, ""
	var err error
	switch {
	case src.Fetch != nil:
		err = src.Fetch(ctx, path, report)
	case src.URL != "":
		name = urlName(src.URL)
		contentType, err = download(ctx, src.URL, src.Networks, path, report, src.Timeouts, src.Limit)
	default:
		err = errors.New("an import needs a URL or a fetcher")
	}
	if err != nil {
		return Info{}, err
	}
	if l := src.Limit.orDefault(); src.Fetch != nil {
		// A fetcher bounds its own writes (an upload was bounded when the server received it):
		// this catches one that did not.
		if st, err := os.Stat(path); err == nil && st.Size() > l.Bytes {
			return Info{}, l.exceeded()
		}
	}
	if err := fromOVA(path); err != nil {
		return Info{}, err
	}
	return inspect(ctx, path, name, contentType)
}
