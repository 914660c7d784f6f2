package netns

import (
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

// addTable installs the pool's nftables table. Its forward chain drops
// every forwarded packet into the pool's bridges that does not belong to
// a connection a sandbox opened: when the host forwards (NAT here, or
// anything else), no other host, worker or sandbox can open a connection
// to a sandbox. With nat, a postrouting chain masquerades the subnet's
// packets leaving through anything but the pool's bridges, and the host's
// IPv4 forwarding is turned on; it stays on after Close, as other
// software may rely on it by then.
func addTable(prefix string, subnet netip.Prefix, nat bool) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netns: nftables: %w", err)
	}
	ours := []byte(prefix + "b") // the first bytes of the bridges' names
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: nftTable(prefix)})
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		// oifname "<prefix>b*" ct state != established,related drop
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ours},
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if nat {
		post := c.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
			// ip saddr & mask == subnet
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ipNet(subnet).Mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: subnet.Addr().AsSlice()},
			// oifname != "<prefix>b*"
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ours},
			&expr.Masq{},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netns: installing nftables table %s: %w", nftTable(prefix), err)
	}
	if nat {
		if err := os.WriteFile(ipForward, []byte("1"), 0); err != nil {
			delTable(prefix)
			return fmt.Errorf("netns: enabling IPv4 forwarding: %w", err)
		}
	}
	return nil
}

// delTable removes the pool's table if there is one, and reports whether
// there was.
func delTable(prefix string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("netns: nftables: %w", err)
	}
	t, err := c.ListTableOfFamily(nftTable(prefix), nftables.TableFamilyIPv4)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("netns: listing nftables table: %w", err)
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("netns: removing nftables table %s: %w", t.Name, err)
	}
	return true, nil
}
