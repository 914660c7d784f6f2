package function

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
)

// version is a parsed PEP 440 version.
type version struct {
	epoch   int64
	release []int64
	pre     *prePart // nil when not a pre-release
	post    int64    // -1 when absent
	dev     int64    // -1 when absent
	local   []string // lower-cased segments, nil when absent
}

type prePart struct {
	kind int // 0 a, 1 b, 2 rc
	n    int64
}

// versionRE is the permissive form from PEP 440's appendix.
var versionRE = regexp.MustCompile(`(?i)^\s*v?` +
	`(?:(\d+)!)?` + // epoch
	`(\d+(?:\.\d+)*)` + // release
	`(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d+)?)?` + // pre
	`(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d+)?)?` + // post
	`(?:[-_.]?(dev)[-_.]?(\d+)?)?` + // dev
	`(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?` + // local
	`\s*$`)

func parseVersion(s string) (version, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return version{}, fmt.Errorf("%q is not a PEP 440 version", s)
	}
	num := func(s string) (int64, error) {
		if s == "" {
			return 0, nil
		}
		b, ok := new(big.Int).SetString(s, 10)
		if !ok || !b.IsInt64() {
			return 0, fmt.Errorf("version component %q is too large", s)
		}
		return b.Int64(), nil
	}
	var v version
	var err error
	if v.epoch, err = num(m[1]); err != nil {
		return version{}, err
	}
	for _, p := range strings.Split(m[2], ".") {
		n, err := num(p)
		if err != nil {
			return version{}, err
		}
		v.release = append(v.release, n)
	}
	if m[3] != "" {
		p := &prePart{}
		switch strings.ToLower(m[3]) {
		case "a", "alpha":
			p.kind = 0
		case "b", "beta":
			p.kind = 1
		default:
			p.kind = 2
		}
		if p.n, err = num(m[4]); err != nil {
			return version{}, err
		}
		v.pre = p
	}
	v.post = -1
	switch {
	case m[5] != "":
		if v.post, err = num(m[5]); err != nil {
			return version{}, err
		}
	case m[6] != "":
		if v.post, err = num(m[7]); err != nil {
			return version{}, err
		}
	}
	v.dev = -1
	if m[8] != "" {
		if v.dev, err = num(m[9]); err != nil {
			return version{}, err
		}
	}
	if m[10] != "" {
		v.local = strings.FieldsFunc(strings.ToLower(m[10]), func(r rune) bool {
			return r == '.' || r == '-' || r == '_'
		})
	}
	return v, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpRelease(a, b []int64) int {
	n := max(len(a), len(b))
	for i := range n {
		var x, y int64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if c := cmpInt(x, y); c != 0 {
			return c
		}
	}
	return 0
}

// compare orders versions per PEP 440. When ignoreLocal is set the local
// segment is not considered, as when a specifier has no local part.
func compare(a, b version, ignoreLocal bool) int {
	if c := cmpInt(a.epoch, b.epoch); c != 0 {
		return c
	}
	if c := cmpRelease(a.release, b.release); c != 0 {
		return c
	}
	// Pre-release key: a dev release with no pre or post sorts before
	// any pre-release; a final release sorts after them.
	preKey := func(v version) (int64, int64) {
		switch {
		case v.pre == nil && v.post < 0 && v.dev >= 0:
			return -1, 0
		case v.pre == nil:
			return 3, 0
		}
		return int64(v.pre.kind), v.pre.n
	}
	ak, an := preKey(a)
	bk, bn := preKey(b)
	if c := cmpInt(ak, bk); c != 0 {
		return c
	}
	if c := cmpInt(an, bn); c != 0 {
		return c
	}
	if c := cmpInt(a.post, b.post); c != 0 {
		return c
	}
	// No dev segment sorts after any dev segment.
	ad, bd := a.dev, b.dev
	if ad < 0 {
		ad = 1<<63 - 1
	}
	if bd < 0 {
		bd = 1<<63 - 1
	}
	if c := cmpInt(ad, bd); c != 0 {
		return c
	}
	if ignoreLocal {
		return 0
	}
	return cmpLocal(a.local, b.local)
}

func cmpLocal(a, b []string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		x, y := a[i], b[i]
		xn, xok := new(big.Int).SetString(x, 10)
		yn, yok := new(big.Int).SetString(y, 10)
		switch {
		case xok && yok:
			if c := xn.Cmp(yn); c != 0 {
				return c
			}
		case xok: // numeric sorts after alphanumeric
			return 1
		case yok:
			return -1
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return cmpInt(int64(len(a)), int64(len(b)))
}

// specifier is one clause of a version specifier such as ">=1.2".
type specifier struct {
	op  string
	raw string // the version text as written
}

var opRE = regexp.MustCompile(`^\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)\s*$`)

func parseSpecifiers(s string) ([]specifier, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "(") && strings.HasSuffix(s, ")") {
		s = s[1 : len(s)-1]
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []specifier
	for _, part := range strings.Split(s, ",") {
		m := opRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("%q is not a version specifier", strings.TrimSpace(part))
		}
		sp := specifier{op: m[1], raw: m[2]}
		if err := sp.check(); err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

// check validates the specifier's version text for its operator.
func (sp specifier) check() error {
	switch sp.op {
	case "===":
		return nil
	case "==", "!=":
		v := strings.TrimSuffix(sp.raw, ".*")
		_, err := parseVersion(v)
		if err == nil && v != sp.raw && strings.Contains(v, "+") {
			return fmt.Errorf("%s%s: a wildcard cannot follow a local version", sp.op, sp.raw)
		}
		return err
	case "~=":
		v, err := parseVersion(sp.raw)
		if err != nil {
			return err
		}
		if len(v.release) < 2 {
			return fmt.Errorf("~=%s needs at least two release components", sp.raw)
		}
		if v.local != nil {
			return fmt.Errorf("~=%s: local versions are not allowed", sp.raw)
		}
		return nil
	default:
		v, err := parseVersion(sp.raw)
		if err == nil && v.local != nil {
			return fmt.Errorf("%s%s: local versions are not allowed", sp.op, sp.raw)
		}
		return err
	}
}

// match reports whether installed version text iv satisfies sp. Ordered
// exclusive comparisons (<, >) use plain PEP 440 ordering without the
// special pre/post-release exclusions; that only matters for versions an
// installer would pick, not for checking an installed one.
func (sp specifier) match(iv string) bool {
	if sp.op == "===" {
		return strings.EqualFold(strings.TrimSpace(iv), sp.raw)
	}
	v, err := parseVersion(iv)
	if err != nil {
		return false
	}
	switch sp.op {
	case "==", "!=":
		eq := equalSpec(v, sp.raw)
		return eq == (sp.op == "==")
	case "~=":
		want, _ := parseVersion(sp.raw)
		prefix := want.release[:len(want.release)-1]
		return compare(v, want, true) >= 0 && v.epoch == want.epoch && hasPrefix(v.release, prefix)
	}
	want, err := parseVersion(sp.raw)
	if err != nil {
		return false
	}
	c := compare(v, want, true)
	switch sp.op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

func equalSpec(v version, raw string) bool {
	if p, ok := strings.CutSuffix(raw, ".*"); ok {
		want, err := parseVersion(p)
		if err != nil || v.epoch != want.epoch {
			return false
		}
		// Compare the full public version prefix: release padded with
		// zeros, then any pre/post/dev in the prefix must match too.
		if want.pre == nil && want.post < 0 && want.dev < 0 {
			return hasPrefix(v.release, want.release)
		}
		return compare(v, want, true) == 0
	}
	want, err := parseVersion(raw)
	if err != nil {
		return false
	}
	return compare(v, want, want.local == nil) == 0
}

// hasPrefix reports whether release r starts with p, padding r with zeros.
func hasPrefix(r, p []int64) bool {
	for i, x := range p {
		var y int64
		if i < len(r) {
			y = r[i]
		}
		if x != y {
			return false
		}
	}
	return true
}
