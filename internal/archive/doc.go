// Package archive unpacks untrusted function code safely: tar.gz, plain tar
// and zip archives (detected by their magic bytes), and directories copied
// with the same rules.
//
// Everything is written below the destination directory and nowhere else.
// Extraction rejects, with ErrUnsafe: absolute names, ".." components
// (even ones that would clean to a path inside the tree), names with NUL
// or backslash, duplicate entries, entries below a symlink or a file,
// symlinks whose target is absolute or resolves (through other symlinks)
// outside the tree, hard links to anything but a regular file extracted
// earlier, and device files, fifos and sockets. It rejects with
// ErrTooLarge archives or trees over Limits (the compressed size, the
// bytes actually decompressed, never the sizes headers claim, and the
// number of entries), and with ErrFormat anything it cannot parse.
//
// Modes from the archive are not kept: files are written 0644, or 0755
// when any execute bit is set, and directories 0755, so the unprivileged
// sandbox user can read the code but not change it. Setuid, setgid and
// sticky bits are therefore stripped, not rejected: they have no meaning
// for function code, and refusing them would only make archives built by
// careless tools fail.
//
// On error the destination may hold a partial tree; the caller removes it.
// The functions keep no state and are safe for concurrent use with
// distinct destinations.
package archive
