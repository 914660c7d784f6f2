package runtime

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestProtocolErrors feeds the client malformed frames from a fake peer;
// the real runtime never sends these, so they cannot come from it.
func TestProtocolErrors(t *testing.T) {
	ready := []byte{8, 0, 0, 0, 'R', 1, 0, 0, 0, 0, 0, 0, 0}
	tests := []struct {
		name   string
		frames [][]byte // sent after reading each request
		invoke bool
	}{
		{"bad ready type", [][]byte{{0, 0, 0, 0, 'Z'}}, false},
		{"short ready", [][]byte{{4, 0, 0, 0, 'R', 0, 0, 0, 0}}, false},
		{"bad load error json", [][]byte{{2, 0, 0, 0, 'L', '{', '['}}, false},
		{"bad result type", [][]byte{ready, {8, 0, 0, 0, 'R', 0, 0, 0, 0, 0, 0, 0, 0}}, true},
		{"short result", [][]byte{ready, {2, 0, 0, 0, 'O', 0, 0}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				buf := make([]byte, 4096)
				for i, f := range tt.frames {
					if i > 0 {
						b.Read(buf)
					}
					b.Write(f)
				}
			}()
			c := NewConn(a)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var err error
			if tt.invoke {
				if _, err := c.WaitReady(ctx); err != nil {
					t.Fatal(err)
				}
				_, err = c.Invoke(ctx, Request{ID: "x"})
			} else {
				_, err = c.WaitReady(ctx)
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			// Broken from now on.
			if _, err := c.Invoke(ctx, Request{ID: "y"}); !errors.Is(err, ErrProtocol) {
				t.Errorf("next call: %v", err)
			}
		})
	}
}
