package lambda

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Key is one access key the operator gave the Lambda API.
type Key struct {
	// Name is the key's name (its section in the credentials file), for
	// the worker's log; never sent to clients.
	Name   string
	ID     string
	Secret string
}

// Keys are access keys by access key id.
type Keys map[string]Key

// maxCredentialsBytes bounds a credentials file.
const maxCredentialsBytes = 1 << 20

// LoadKeys reads a credentials file in the format of the AWS shared
// credentials file (~/.aws/credentials): one section per key, its name
// in brackets, with aws_access_key_id and aws_secret_access_key:
//
//	[ci]
//	aws_access_key_id = AKIDHEARTHCI
//	aws_secret_access_key = ...
//
// The file holds secrets: it must be a regular file that neither its
// group nor others may read or write.
func LoadKeys(path string) (Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("lambda credentials: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("lambda credentials %s: not a regular file: %w", path, ErrBadCredentials)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("lambda credentials %s: mode %04o lets others read it (chmod 600): %w",
			path, fi.Mode().Perm(), ErrBadCredentials)
	}
	if fi.Size() > maxCredentialsBytes {
		return nil, fmt.Errorf("lambda credentials %s: larger than %d bytes: %w", path, maxCredentialsBytes, ErrBadCredentials)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("lambda credentials: %w", err)
	}
	keys, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("lambda credentials %s: %w", path, err)
	}
	return keys, nil
}

// ParseKeys parses the content of a credentials file (see LoadKeys).
func ParseKeys(data []byte) (Keys, error) {
	type section struct {
		name       string
		line       int
		id, secret string
	}
	var secs []*section
	var cur *section
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: unterminated section name: %w", n, ErrBadCredentials)
			}
			name := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line[1:len(line)-1]), "profile "))
			if name == "" {
				return nil, fmt.Errorf("line %d: empty section name: %w", n, ErrBadCredentials)
			}
			cur = &section{name: name, line: n}
			secs = append(secs, cur)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want key = value: %w", n, ErrBadCredentials)
		}
		if cur == nil {
			return nil, fmt.Errorf("line %d: a key outside any [section]: %w", n, ErrBadCredentials)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "aws_access_key_id":
			cur.id = v
		case "aws_secret_access_key":
			cur.secret = v
		}
		// Other keys (region, output...) may share the file; they are
		// not the API's business.
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrBadCredentials)
	}
	keys := Keys{}
	names := map[string]bool{}
	for _, s := range secs {
		switch {
		case s.id == "" || s.secret == "":
			return nil, fmt.Errorf("[%s] (line %d): needs aws_access_key_id and aws_secret_access_key: %w", s.name, s.line, ErrBadCredentials)
		case strings.ContainsAny(s.id, "/, ") || len(s.id) > 128:
			return nil, fmt.Errorf("[%s] (line %d): access key id %q has a character SigV4 cannot carry: %w", s.name, s.line, s.id, ErrBadCredentials)
		case names[s.name]:
			return nil, fmt.Errorf("[%s] (line %d): a second section of that name: %w", s.name, s.line, ErrBadCredentials)
		}
		if k, dup := keys[s.id]; dup {
			return nil, fmt.Errorf("[%s] (line %d): access key id also in [%s]: %w", s.name, s.line, k.Name, ErrBadCredentials)
		}
		names[s.name] = true
		keys[s.id] = Key{Name: s.name, ID: s.id, Secret: s.secret}
	}
	return keys, nil
}
