package apiserver

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	apps "kumo.dev/kumo/pkg/apis/apps/v1alpha1"
	kumo "kumo.dev/kumo/pkg/apis/kumo/v1alpha1"
)

// A staged upload of a tenant's disk is sealed with a key derived from the tenant's key: the
// server's disk never holds it in plaintext once it has been inspected.
//
// Format: a 48-byte header (magic "KUMOSTG1", a random 32-byte salt, the plaintext size as a
// big-endian uint64), then the plaintext in chunks of sealChunk bytes, each sealed with
// AES-256-GCM under HKDF-SHA256(tenant key, salt, info "kumo.dev staged upload v1" + object
// UID). The nonce is the chunk's index and a last-chunk flag, and the header is every chunk's
// additional data: chunks cannot be reordered, dropped, truncated or moved to another object or
// file, and the size cannot be changed.
const (
	sealMagic      = "KUMOSTG1"
	sealSaltSize   = 32
	sealHeaderSize = len(sealMagic) + sealSaltSize + 8
	sealChunk      = 64 << 10
	sealInfo       = "kumo.dev staged upload v1\x00"
)

// errSealBroken says a sealed file was altered or is not a sealed file.
var errSealBroken = errors.New("staged upload failed authentication (altered or not sealed by this server)")

func sealAEAD(key []byte, salt []byte, uid string) (cipher.AEAD, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("tenant key has %d bytes, want at least 32", len(key))
	}
	k, err := hkdf.Key(sha256.New, key, salt, sealInfo+uid, 32)
	if err != nil {
		return nil, fmt.Errorf("derive the staging key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func sealNonce(index uint64, last bool) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n, index)
	if last {
		n[11] = 1
	}
	return n
}

// sealChunks is how many chunks hold size bytes: at least one, so an empty file still ends in an
// authenticated last chunk.
func sealChunks(size uint64) uint64 {
	if size == 0 {
		return 1
	}
	return (size + sealChunk - 1) / sealChunk
}

// sealedSize is the size of the sealed file of size plaintext bytes: the header and a GCM tag
// per chunk.
func sealedSize(size int64) int64 {
	return int64(sealHeaderSize) + size + int64(sealChunks(uint64(size)))*16
}

// sealFile writes src, sealed for the object uid with the tenant key, to dst (mode 0600, synced).
func sealFile(src, dst string, key []byte, uid string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	header := make([]byte, sealHeaderSize)
	copy(header, sealMagic)
	if _, err := rand.Read(header[len(sealMagic) : len(sealMagic)+sealSaltSize]); err != nil {
		return err
	}
	size := uint64(st.Size())
	binary.BigEndian.PutUint64(header[len(sealMagic)+sealSaltSize:], size)
	aead, err := sealAEAD(key, header[len(sealMagic):len(sealMagic)+sealSaltSize], uid)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	if _, err := out.Write(header); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	buf := make([]byte, sealChunk)
	sealed := make([]byte, 0, sealChunk+aead.Overhead())
	n := sealChunks(size)
	for i := uint64(0); i < n; i++ {
		want := sealChunk
		if i == n-1 {
			want = int(size - i*sealChunk)
		}
		if _, err := io.ReadFull(in, buf[:want]); err != nil {
			return fmt.Errorf("read %s: %w", src, err)
		}
		sealed = aead.Seal(sealed[:0], sealNonce(i, i == n-1), buf[:want], header)
		if _, err := out.Write(sealed); err != nil {
			return fmt.Errorf("write %s: %w", dst, err)
		}
	}
	return out.Sync()
}

// sealedReader decrypts a sealed staged upload chunk by chunk; Read fails with errSealBroken on
// the first chunk that does not authenticate.
type sealedReader struct {
	f       *os.File
	aead    cipher.AEAD
	header  []byte
	size    uint64
	next, n uint64
	buf     []byte
	plain   []byte
}

// openSealed opens a sealed staged upload of the object uid and returns its plaintext reader and
// size. The header is checked now, each chunk as it is read.
func openSealed(path string, key []byte, uid string) (*sealedReader, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	header := make([]byte, sealHeaderSize)
	if _, err := io.ReadFull(f, header); err != nil || !bytes.Equal(header[:len(sealMagic)], []byte(sealMagic)) {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", path, errSealBroken)
	}
	aead, err := sealAEAD(key, header[len(sealMagic):len(sealMagic)+sealSaltSize], uid)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	size := binary.BigEndian.Uint64(header[len(sealMagic)+sealSaltSize:])
	n := sealChunks(size)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if want := uint64(sealHeaderSize) + size + n*uint64(aead.Overhead()); uint64(st.Size()) != want || size > 1<<62 {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %d bytes, want %d: %w", path, st.Size(), want, errSealBroken)
	}
	return &sealedReader{f: f, aead: aead, header: header, size: size, n: n, buf: make([]byte, sealChunk+aead.Overhead())}, int64(size), nil
}

func (r *sealedReader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.next == r.n {
			return 0, io.EOF
		}
		want := uint64(sealChunk)
		if r.next == r.n-1 {
			want = r.size - r.next*sealChunk
		}
		ct := r.buf[:want+uint64(r.aead.Overhead())]
		if _, err := io.ReadFull(r.f, ct); err != nil {
			return 0, fmt.Errorf("read %s: %w", r.f.Name(), err)
		}
		plain, err := r.aead.Open(ct[:0], sealNonce(r.next, r.next == r.n-1), ct, r.header)
		if err != nil {
			return 0, fmt.Errorf("%s chunk %d: %w", r.f.Name(), r.next, errSealBroken)
		}
		r.plain = plain
		r.next++
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

func (r *sealedReader) Close() error { return r.f.Close() }

// tenantKeyOf reads the key of the tenant owning namespace ns.
func tenantKeyOf(ctx context.Context, keys rest.Getter, ns string) ([]byte, error) {
	tenant := kumo.TenantOfNamespace(ns)
	if tenant == "" {
		return nil, apierrors.NewForbidden(apps.Resource("vmdisks/upload"), "", fmt.Errorf("namespace %s belongs to no tenant", ns))
	}
	obj, err := keys.Get(genericapirequest.WithNamespace(ctx, ""), tenant, &metav1.GetOptions{})
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("the key of tenant %s is not ready: %v", tenant, err))
	}
	raw, err := base64.StdEncoding.DecodeString(obj.(*kumo.TenantKey).Key)
	if err != nil {
		return nil, fmt.Errorf("decode the key of tenant %s: %w", tenant, err)
	}
	return raw, nil
}

// serveSealed streams a sealed staged upload to the node, decrypted. A chunk that fails
// authentication after the response has begun aborts the connection, so the node sees a broken
// transfer, never a short or altered image.
func (u *uploadREST) serveSealed(ctx context.Context, w http.ResponseWriter, responder rest.Responder, obj runtime.Object, sub schema.GroupResource, name, path string) {
	m, err := meta.Accessor(obj)
	if err != nil {
		responder.Error(err)
		return
	}
	key, err := u.key(ctx, obj)
	if err != nil {
		responder.Error(err)
		return
	}
	r, size, err := openSealed(path, key, string(m.GetUID()))
	if err != nil {
		if errors.Is(err, errSealBroken) {
			slog.Error("refuse a staged upload that fails authentication", "resource", u.resource.String(), "object", m.GetNamespace()+"/"+name, "err", err)
			responder.Error(apierrors.NewInternalError(fmt.Errorf("the staged upload of %s failed authentication: upload again", name)))
			return
		}
		responder.Error(apierrors.NewNotFound(sub, name))
		return
	}
	defer r.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, r); err != nil {
		slog.Error("serve a staged upload", "resource", u.resource.String(), "object", m.GetNamespace()+"/"+name, "err", err)
		panic(http.ErrAbortHandler)
	}
}
