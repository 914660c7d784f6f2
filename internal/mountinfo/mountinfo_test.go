package mountinfo

import "testing"

func TestUnescapeMount(t *testing.T) {
	tests := map[string]string{
		`/a/b`:         "/a/b",
		`/a\040b`:      "/a b",
		`/a\011b\134c`: "/a\tb\\c",
		`/bad\09`:      `/bad\09`,
		`/end\04`:      `/end\04`,
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := Unescape(in); got != want {
				t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
			}
		})
	}
}
