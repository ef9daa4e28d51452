package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netnsDir is where named namespaces are bind-mounted (the same place `ip netns` uses).
const netnsDir = "/var/run/netns"

// addrFor returns the host address number k of prefix p (k=1 is the first address).
func addrFor(p netip.Prefix, k int) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Underlay addresses: .1 the host, .10*N the control namespace of datacenter N, .10*N+K its
// node K.
func dcAddr(sub netip.Prefix, dc int) netip.Addr         { return addrFor(sub, 10*dc) }
func nodeAddr(sub netip.Prefix, dc, node int) netip.Addr { return addrFor(sub, 10*dc+node) }

// checkHostRoutes refuses a lab subnet that overlaps a route of the host (other than the lab's
// own veth): the lab must never capture or leak real traffic.
func checkHostRoutes(subnet, external netip.Prefix) error {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list the host's routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil && link.Attrs().Name == HostLink {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if !ok || ones == 0 {
			continue // a default route does not capture the lab's more specific one
		}
		rp := netip.PrefixFrom(ip, ones)
		for _, p := range []netip.Prefix{subnet, external} {
			if rp.Overlaps(p) {
				return fmt.Errorf("the lab's network %s overlaps the host's route to %s: pick another with --subnet/--external", p, rp)
			}
		}
	}
	return nil
}

// inNamespace runs f with the calling goroutine's thread switched into the named namespace.
// The thread is left locked (and so discarded by the runtime) when switching back fails.
func inNamespace(name string, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace %s: %w", name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave network namespace %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// handleIn opens a netlink handle inside the named namespace.
func handleIn(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return h, nil
}

// newNamespace creates a named network namespace with its loopback up, without moving the
// caller into it.
func newNamespace(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current network namespace: %w", err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name) // also switches this thread into it
	if err != nil {
		_ = netns.Set(orig)
		return fmt.Errorf("create network namespace %s: %w", name, err)
	}
	defer ns.Close()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("leave new namespace %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback of %s: %w", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback of %s up: %w", name, err)
	}
	return nil
}

// labNamespaces lists the named namespaces with the lab's prefix.
func labNamespaces() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), NamespacePrefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// nsInode is the identity of a named namespace, as /proc/PID/ns/net shows it.
func nsInode(name string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(netnsDir, name), &st); err != nil {
		return 0, fmt.Errorf("namespace %s: %w", name, err)
	}
	return st.Ino, nil
}

// bridge creates a bridge in the underlay namespace.
func bridge(h *netlink.Handle, name string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s up: %w", name, err)
	}
	return nil
}

// plug creates a veth pair: portName on bridge br in the underlay namespace, and its peer
// inner (named innerName, with addr/bits) in the namespace ns; both ends up. gw, if valid,
// becomes the namespace's default route.
func plug(underlay *netlink.Handle, br, portName, ns, innerName string, addr netip.Prefix, gw netip.Addr) error {
	target, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer target.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: portName},
		PeerName:      innerName,
		PeerNamespace: netlink.NsFd(int(target)),
	}
	if err := underlay.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s into %s: %w", portName, ns, err)
	}
	port, err := underlay.LinkByName(portName)
	if err != nil {
		return fmt.Errorf("veth %s: %w", portName, err)
	}
	master, err := underlay.LinkByName(br)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", br, err)
	}
	if err := underlay.LinkSetMaster(port, master); err != nil {
		return fmt.Errorf("attach %s to %s: %w", portName, br, err)
	}
	if err := underlay.LinkSetUp(port); err != nil {
		return fmt.Errorf("%s up: %w", portName, err)
	}
	h, err := netlink.NewHandleAt(target)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer h.Close()
	return configureEnd(h, ns, innerName, addr, gw)
}

func configureEnd(h *netlink.Handle, where, name string, addr netip.Prefix, gw netip.Addr) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", name, where, err)
	}
	ipnet := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", addr, name, where, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s up in %s: %w", name, where, err)
	}
	if gw.IsValid() {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s in %s: %w", gw, where, err)
		}
	}
	return nil
}

// plugHost connects the host to the underlay: HostLink in the host's namespace with the
// subnet's first address (its connected route is the only lab route the host gets).
func plugHost(underlay *netlink.Handle, subnet netip.Prefix) error {
	target, err := netns.GetFromName(UnderlayNamespace)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", UnderlayNamespace, err)
	}
	defer target.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: HostLink},
		PeerName:      "v-host",
		PeerNamespace: netlink.NsFd(int(target)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create the host's veth %s: %w", HostLink, err)
	}
	port, err := underlay.LinkByName("v-host")
	if err != nil {
		return fmt.Errorf("underlay end of the host's veth: %w", err)
	}
	master, err := underlay.LinkByName(underlayBridge)
	if err != nil {
		return err
	}
	if err := underlay.LinkSetMaster(port, master); err != nil {
		return fmt.Errorf("attach the host's veth to %s: %w", underlayBridge, err)
	}
	if err := underlay.LinkSetUp(port); err != nil {
		return err
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	return configureEnd(h, "the host", HostLink, netip.PrefixFrom(addrFor(subnet, 1), subnet.Bits()), netip.Addr{})
}

// setLink sets the underlay link of a lab namespace up or down (the bridge port in the
// underlay namespace: the namespace's own end stays up, as a cut cable leaves it).
func setLink(ns string, up bool) error {
	h, err := handleIn(UnderlayNamespace)
	if err != nil {
		return err
	}
	defer h.Close()
	port := portName(ns)
	link, err := h.LinkByName(port)
	if err != nil {
		return fmt.Errorf("underlay port %s of %s: %w", port, ns, err)
	}
	if up {
		err = h.LinkSetUp(link)
	} else {
		err = h.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set %s of %s up=%v: %w", port, ns, up, err)
	}
	return nil
}

// portName names the underlay bridge port of a namespace (at most 15 bytes).
func portName(ns string) string {
	p := "v-" + strings.TrimPrefix(ns, NamespacePrefix)
	if len(p) > 15 {
		p = p[:15]
	}
	return p
}

// deleteNetwork removes the host's veth (its peer goes with it) and every lab namespace (the
// underlay's bridges and veths go with theirs). Missing pieces are fine.
func deleteNetwork() error {
	var errs []error
	if link, err := netlink.LinkByName(HostLink); err == nil {
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", HostLink, err))
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		errs = append(errs, fmt.Errorf("look up %s: %w", HostLink, err))
	}
	names, err := labNamespaces()
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := netns.DeleteNamed(n); err != nil {
			errs = append(errs, fmt.Errorf("delete network namespace %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
