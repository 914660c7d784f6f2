package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the name, in a worker's data dir, of the file that holds
// the API's bearer token when hearth.yaml sets none: made at the first
// start, readable by root only, read by the CLI on the same host.
const TokenFile = "api-token"

// LoadOrCreateToken returns the token in dataDir's TokenFile, making one
// (32 random bytes, hex) if there is none. The file is root's and mode
// 0600 whatever it was; one that is not a regular file, or is empty, is
// an error rather than something to overwrite.
func LoadOrCreateToken(dataDir string) (token string, created bool, err error) {
	p := filepath.Join(dataDir, TokenFile)
	t, err := ReadToken(p)
	if err == nil {
		if err := os.Chown(p, 0, 0); err != nil {
			return "", false, fmt.Errorf("api token: %w", err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return "", false, fmt.Errorf("api token: %w", err)
		}
		return t, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("api token: %w", err)
	}
	t = hex.EncodeToString(b)
	// O_EXCL: never through a link or over a file another made meanwhile.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", false, fmt.Errorf("api token: %w", err)
	}
	_, werr := f.WriteString(t + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(p)
		return "", false, fmt.Errorf("api token: %w", err)
	}
	return t, true, nil
}

// ReadToken reads a token file (as LoadOrCreateToken writes it).
func ReadToken(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("api token: %s is not a regular file", filepath.Base(path))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" || len(t) > 4096 {
		return "", fmt.Errorf("api token: %s is empty or too long", filepath.Base(path))
	}
	return t, nil
}
