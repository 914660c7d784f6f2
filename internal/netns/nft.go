package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftTable names a pool's nftables table.
func nftTable(prefix string) string { return "hearth-" + prefix }

// ipForward is the host's IPv4 forwarding switch; NAT needs it on.
const ipForward = "/proc/sys/net/ipv4/ip_forward"

// UIDRange is an inclusive range of host uids.
type UIDRange struct{ First, Last uint32 }

// tableSpec is what the pool's table enforces.
type tableSpec struct {
	prefix string
	subnet netip.Prefix
	nat    bool
	guard  []UIDRange
}

// addTable installs the pool's nftables table (family inet, so IPv6 is
// covered too), whose chains keep sandboxes off the host:
//
//   - input: a packet that comes in from one of the pool's bridges and
//     is addressed to the host itself (the bridge's address, loopback
//     services reached through it, any of the host's addresses) is
//     rejected unless it answers a connection the host opened. Routing
//     alone does not do it: the host answers on all its addresses on
//     every interface.
//   - forward: no connection into the pool's bridges unless a sandbox
//     opened it (when the host forwards, for NAT or anything else); and
//     without nat, nothing out of them at all (no egress).
//   - output: packets of sockets whose owner's uid is in guard, to the
//     host's own addresses (everything local leaves through lo) or into
//     the pool's bridges, are rejected: sandboxes in the host's network
//     namespace (network: host, and any process of a sandbox's uid that
//     is in it: installers, zygotes) reach neither the worker's API nor
//     any other local service nor an isolated sandbox. They are rejected,
//     so the sender learns it at once.
//   - postrouting, with nat: the subnet's packets forwarded from the
//     pool's bridges to anything but them are masqueraded, and the host's
//     IPv4 forwarding is turned on; it stays on after Close, as other
//     software may rely on it by then.
func addTable(ts tableSpec) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netns: nftables: %w", err)
	}
	ours := []byte(ts.prefix + "b") // the first bytes of the bridges' names
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable(ts.prefix)})
	notReply := []expr.Any{
		// ct state != established,related
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}
	iifOurs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ours},
	}
	oifOurs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ours},
	}
	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		var e []expr.Any
		for _, p := range parts {
			e = append(e, p...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
	}
	reject := []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}
	drop := []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}

	in := c.AddChain(&nftables.Chain{
		Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	})
	// iifname "<prefix>b*" ct state != established,related reject
	rule(in, iifOurs, notReply, reject)

	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	// oifname "<prefix>b*" ct state != established,related drop
	rule(fwd, oifOurs, notReply, drop)
	if !ts.nat {
		// iifname "<prefix>b*" reject: no egress.
		rule(fwd, iifOurs, reject)
	}

	if len(ts.guard) > 0 {
		out := c.AddChain(&nftables.Chain{
			Name: "output", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter,
		})
		lo := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("lo\x00")},
		}
		for _, g := range ts.guard {
			// meta skuid First-Last: skuid is in host byte order, the
			// range compares bytes, so it is turned big-endian first (as
			// nft does).
			uid := []expr.Any{
				&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
				&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
				&expr.Range{Op: expr.CmpOpEq, Register: 1,
					FromData: binary.BigEndian.AppendUint32(nil, g.First), ToData: binary.BigEndian.AppendUint32(nil, g.Last)},
			}
			rule(out, uid, lo, reject)
			rule(out, uid, oifOurs, reject)
		}
	}

	if ts.nat {
		post := c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		rule(post, []expr.Any{
			// meta nfproto ipv4
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			// ip saddr & mask == subnet
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ipNet(ts.subnet).Mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ts.subnet.Addr().AsSlice()},
			// iifname "<prefix>b*": forwarded from a sandbox, never the
			// host's own packets from the bridge's address (to a local
			// service through lo, which masquerading would break)
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ours},
			// oifname != "<prefix>b*"
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ours},
			&expr.Masq{},
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netns: installing nftables table %s: %w", nftTable(ts.prefix), err)
	}
	if ts.nat {
		if err := os.WriteFile(ipForward, []byte("1"), 0); err != nil {
			delTable(ts.prefix)
			return fmt.Errorf("netns: enabling IPv4 forwarding: %w", err)
		}
	}
	return nil
}

// tableFamilies are where a pool's table may be: inet now, ipv4 in
// workers from before the input and output chains.
var tableFamilies = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyIPv4}

// delTable removes the pool's tables if there are any, and reports
// whether there were.
func delTable(prefix string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("netns: nftables: %w", err)
	}
	had := false
	for _, fam := range tableFamilies {
		t, err := c.ListTableOfFamily(nftTable(prefix), fam)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return had, fmt.Errorf("netns: listing nftables table: %w", err)
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return had, fmt.Errorf("netns: removing nftables table %s: %w", t.Name, err)
		}
		had = true
	}
	return had, nil
}

// HasTable reports whether a pool with this prefix has its nftables
// table installed (for tests and doctor).
func HasTable(prefix string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("netns: nftables: %w", err)
	}
	for _, fam := range tableFamilies {
		_, err := c.ListTableOfFamily(nftTable(prefix), fam)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("netns: listing nftables table: %w", err)
		}
		return true, nil
	}
	return false, nil
}

// Rules describes a pool's installed table: its chains and, per chain,
// how many rules, and whether the postrouting chain masquerades. Tests
// and doctor use it to check what the kernel holds.
type Rules struct {
	Chains     map[string]int
	Masquerade bool
}

// ListRules reads the pool's table back from the kernel.
func ListRules(prefix string) (Rules, error) {
	r := Rules{Chains: map[string]int{}}
	c, err := nftables.New()
	if err != nil {
		return r, fmt.Errorf("netns: nftables: %w", err)
	}
	t, err := c.ListTableOfFamily(nftTable(prefix), nftables.TableFamilyINet)
	if err != nil {
		return r, fmt.Errorf("netns: table %s: %w", nftTable(prefix), err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return r, fmt.Errorf("netns: chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return r, fmt.Errorf("netns: rules of %s: %w", ch.Name, err)
		}
		r.Chains[ch.Name] = len(rules)
		for _, rl := range rules {
			for _, e := range rl.Exprs {
				if _, ok := e.(*expr.Masq); ok {
					r.Masquerade = true
				}
			}
		}
	}
	return r, nil
}

// Probe checks that this host's kernel takes the pool's kind of table
// (nf_tables, family inet, with a reject rule): it installs a throwaway
// table and removes it. Without it there is no pool, and no worker.
func Probe() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netns: nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: fmt.Sprintf("hearth-probe-%d", os.Getpid())})
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("hearth-probe\x00")},
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netns: nftables inet table: %w", err)
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netns: removing the probe table: %w", err)
	}
	return nil
}
