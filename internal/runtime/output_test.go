package runtime

import (
	"reflect"
	"strings"
	"testing"
)

type outLine struct { // a parsed line, for comparisons
	s    Stream
	text string
}

func parseOutput(def Stream, chunks ...string) []outLine {
	var got []outLine
	o := NewOutput(def, func(s Stream, line string) { got = append(got, outLine{s, line}) })
	for _, c := range chunks {
		o.Write([]byte(c))
	}
	o.Close()
	return got
}

// TestOutput parses tagged and untagged output, whole and cut at every
// byte: where a write boundary falls must never change the lines.
func TestOutput(t *testing.T) {
	tests := []struct {
		name string
		def  Stream
		in   string
		want []outLine
	}{
		{"untagged", Stdout, "a\nb\n", []outLine{{Stdout, "a"}, {Stdout, "b"}}},
		{"untagged stderr pipe", Stderr, "a\n", []outLine{{Stderr, "a"}}},
		{"tagged in order", Stdout, "\x1eoone\n\x1eetwo\n\x1eothree\n",
			[]outLine{{Stdout, "one"}, {Stderr, "two"}, {Stdout, "three"}}},
		{"tagged on the stderr pipe", Stderr, "\x1eoout\n", []outLine{{Stdout, "out"}}},
		{"pieces of a line", Stdout, "\x1eOab\n\x1eeerr\n\x1eocd\n",
			[]outLine{{Stderr, "err"}, {Stdout, "abcd"}}},
		{"empty lines", Stdout, "\x1eo\n\n", []outLine{{Stdout, ""}, {Stdout, ""}}},
		{"raw before a record", Stdout, "raw\x1eetagged\nmore\n",
			[]outLine{{Stderr, "tagged"}, {Stdout, "rawmore"}}},
		{"a mark that is no record", Stdout, "a\x1exb\n\x1ez\n",
			[]outLine{{Stdout, "a\x1exb"}, {Stdout, "\x1ez"}}},
		{"record text is opaque", Stdout, "\x1eo\x1eefake\n", []outLine{{Stdout, "\x1eefake"}}},
		{"unfinished lines at close", Stdout, "\x1eOpart\nraw", []outLine{{Stdout, "partraw"}}},
		{"unfinished stderr at close", Stdout, "\x1eEoops", []outLine{{Stderr, "oops"}}},
		{"lone mark at close", Stderr, "\x1e", []outLine{{Stderr, "\x1e"}}},
		{"multibyte text", Stdout, "\x1eeé ü\n", []outLine{{Stderr, "é ü"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseOutput(tt.def, tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("whole: got %v, want %v", got, tt.want)
			}
			for i := 1; i < len(tt.in); i++ {
				if got := parseOutput(tt.def, tt.in[:i], tt.in[i:]); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("cut at %d: got %v, want %v", i, got, tt.want)
				}
			}
			bytewise := make([]string, len(tt.in))
			for i := 0; i < len(tt.in); i++ {
				bytewise[i] = tt.in[i : i+1]
			}
			if got := parseOutput(tt.def, bytewise...); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("byte by byte: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestOutputLongLine cuts an endless line into MaxLine pieces, tagged or
// not, so that it shows up and holds no more than that.
func TestOutputLongLine(t *testing.T) {
	long := strings.Repeat("x", 2*MaxLine+5)
	for _, in := range []string{long, "\x1eE" + long, "\x1eO" + long[:MaxLine] + "\n\x1eo" + long[MaxLine:] + "\n"} {
		got := parseOutput(Stdout, in)
		var n int
		for _, l := range got {
			if len(l.text) > MaxLine {
				t.Errorf("line of %d bytes", len(l.text))
			}
			n += len(l.text)
		}
		if n != len(long) || len(got) != 3 {
			t.Errorf("%d lines, %d bytes; want 3 and %d", len(got), n, len(long))
		}
	}
}
