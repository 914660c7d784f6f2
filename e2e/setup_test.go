package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// setupCommands returns the indented command lines of the README's
// "Set up" section.
func setupCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, "## Set up")
			continue
		}
		if in && strings.HasPrefix(line, "    ") && strings.TrimSpace(line) != "" {
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// TestReadmeSetupCommands checks that the README's two set-up commands
// run as given on a machine without sudo (a fresh Debian where one is
// root): no sudo in front, and scripts that exist and are executable.
func TestReadmeSetupCommands(t *testing.T) {
	cmds := setupCommands(t)
	if len(cmds) != 2 {
		t.Fatalf("README set-up commands: %q, want exactly two", cmds)
	}
	for _, c := range cmds {
		f := strings.Fields(c)
		if f[0] == "sudo" {
			t.Errorf("%q starts with sudo, which a fresh Debian machine does not have", c)
			continue
		}
		fi, err := os.Stat(filepath.Join("..", f[0]))
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%q: %s is not an executable script: %v", c, f[0], err)
		}
	}
}

// TestScriptsBecomeRoot runs each set-up script as an unprivileged user:
// with a sudo on the PATH the script runs itself again through it,
// keeping PATH and the HEARTH_* settings; without one it says that it
// needs root, instead of failing half-way.
func TestScriptsBecomeRoot(t *testing.T) {
	// Not t.TempDir: its parent is private to root.
	dir, err := os.MkdirTemp("", "hearth-scripts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	scripts := filepath.Join(dir, "scripts")
	if err := os.Mkdir(scripts, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("../scripts")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".sh") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("../scripts", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(scripts, e.Name()), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A sudo that records its arguments, one a line, and does nothing.
	withSudo := filepath.Join(dir, "with-sudo")
	noSudo := filepath.Join(dir, "no-sudo")
	for _, d := range []string{withSudo, noSudo} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	record := filepath.Join(dir, "sudo-args")
	if err := os.WriteFile(record, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(record, 0o666)
	sudo := "#!/bin/bash\nprintf '%s\\n' \"$@\" > " + record + "\n"
	if err := os.WriteFile(filepath.Join(withSudo, "sudo"), []byte(sudo), 0o755); err != nil {
		t.Fatal(err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	run := func(path, script string) (string, error) {
		cmd := exec.Command(bash, filepath.Join(scripts, script), "arg one")
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + path, "HEARTH_DATA_DIR=/x y", "FUZZTIME=5x", "OTHER=z"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, script := range []string{"demo.sh", "test.sh", "setup.sh"} {
		t.Run(script, func(t *testing.T) {
			os.WriteFile(record, nil, 0o666)
			out, err := run(withSudo, script)
			if err != nil {
				t.Fatalf("with sudo: %v\n%s", err, out)
			}
			got, _ := os.ReadFile(record)
			want := strings.Join([]string{"env", "PATH=" + withSudo, "FUZZTIME=5x", "HEARTH_DATA_DIR=/x y",
				filepath.Join(scripts, script), "arg one"}, "\n") + "\n"
			if string(got) != want {
				t.Errorf("sudo got:\n%s\nwant:\n%s(output: %s)", got, want, out)
			}

			out, err = run(noSudo, script)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Errorf("without sudo: %v, want exit status 1\n%s", err, out)
			}
			if !strings.Contains(out, "run as root") || strings.Contains(out, "command not found") {
				t.Errorf("without sudo, output %q does not say to run as root", out)
			}
		})
	}
}
