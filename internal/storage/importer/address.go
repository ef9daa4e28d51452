package importer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Networks are the address rules of one kind of import (tenant disks, golden images): which
// addresses a download may connect to. Its zero value refuses every internal address.
//
// The rules are checked against the address each connection is really made to (every redirect
// hop, every address a name resolves to), never against a name: a name that resolves to a public
// address when validated and to 127.0.0.1 when fetched is refused.
type Networks struct {
	// Allowed are networks an admin opened to imports: an address in one of them is allowed even
	// when it is internal (e.g. 127.0.0.1/32 for a test server on loopback).
	Allowed []netip.Prefix
	// Platform are the platform's own networks (its API servers, nodes, VM networks), refused
	// unless Allowed. The addresses of this host's own interfaces are always refused too.
	Platform []netip.Prefix
}

// AddressError is a connection a download was not allowed to make. Its message names the address
// only — never the port, nor whether anything listens there — so that refusals do not make the
// importer a port scanner.
type AddressError struct {
	Addr netip.Addr
	// Why is the address's kind: "loopback", "private", ...
	Why string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("address %s is not allowed for imports (%s)", e.Addr, e.Why)
}

// internal are the address ranges no import reaches unless an admin allows them.
var internal = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (CGNAT)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fc00::/7"), "private (unique local)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// embedded are IPv6 prefixes that carry an IPv4 address (NAT64, 6to4): the IPv4 address they
// reach is checked as well.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")
var sixToFour = netip.MustParsePrefix("2002::/16")

// localAddrs lists the addresses of this host's interfaces; tests replace it.
var localAddrs = func() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap().WithZone(""))
		}
	}
	return out, nil
}

// Check says whether a download may connect to addr: nil when allowed, an *AddressError when not.
func (n Networks) Check(addr netip.Addr) error {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return &AddressError{Addr: addr, Why: "invalid"}
	}
	for _, p := range n.Allowed {
		if p.Contains(addr) {
			return nil
		}
	}
	if why := classify(addr); why != "" {
		return &AddressError{Addr: addr, Why: why}
	}
	for _, p := range n.Platform {
		if p.Contains(addr) {
			return &AddressError{Addr: addr, Why: "the platform's own network"}
		}
	}
	own, err := localAddrs()
	if err != nil {
		// Unknown is not "not ours": refuse rather than guess.
		return &AddressError{Addr: addr, Why: "this host's addresses are unknown"}
	}
	for _, a := range own {
		if a == addr {
			return &AddressError{Addr: addr, Why: "an address of this host"}
		}
	}
	return nil
}

// classify names the internal range addr is in ("" when none), looking through IPv6 prefixes
// that embed an IPv4 address.
func classify(addr netip.Addr) string {
	for _, r := range internal {
		if r.prefix.Contains(addr) {
			return r.why
		}
	}
	if addr.Is6() {
		b := addr.As16()
		var v4 netip.Addr
		switch {
		case nat64.Contains(addr):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case sixToFour.Contains(addr):
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if v4.IsValid() {
			if why := classify(v4); why != "" {
				return why + " (embedded in " + addr.String() + ")"
			}
		}
	}
	return ""
}

// control is a net.Dialer Control func: it runs after name resolution, just before each
// connection, with the address really connected to.
func (n Networks) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &AddressError{Why: "unparsable address"}
	}
	return n.Check(ap.Addr())
}

// client is the HTTP client of one download: every connection (each redirect hop, each address
// a name resolves to) is checked against n; no proxy is used, since a proxy would connect to
// addresses the filter never sees.
func (n Networks) client(header time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: n.control}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           d.DialContext,
			ResponseHeaderTimeout: header,
			TLSHandshakeTimeout:   30 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return refuse("more than %d redirects", maxRedirects)
			}
			if err := CheckURL(req.URL.String()); err != nil {
				return err
			}
			return nil
		},
	}
}

// maxRedirects bounds the redirects a download follows.
const maxRedirects = 10

// CheckURL refuses what an import URL may not be: anything but http(s) with a host, or a URL
// carrying credentials (they would be echoed in statuses, events and listings).
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return refuse("bad URL: %v", redactErr(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return refuse("URL %s: must be http:// or https:// with a host", u.Redacted())
	}
	if u.User != nil {
		return refuse("URL %s: must not carry credentials (user:password@)", u.Redacted())
	}
	return nil
}

// redactErr drops the URL a url.Error quotes (it may hold a password).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact is raw without its credentials, for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// addressRefusal turns a failed request whose connection the filter refused into a refusal of the
// import (the disk fails with the reason); other errors are returned unchanged.
func addressRefusal(url string, err error) error {
	var ae *AddressError
	if errors.As(err, &ae) {
		return refuse("download %s: %v", redact(url), ae)
	}
	var r *RefusedError
	if errors.As(err, &r) {
		return refuse("download %s: %s", redact(url), r.Reason)
	}
	return err
}

// ParseNetworks parses a comma-separated list of CIDRs (or bare addresses, taken as /32 or
// /128), e.g. the value of --import-allowed-networks.
func ParseNetworks(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("network %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
