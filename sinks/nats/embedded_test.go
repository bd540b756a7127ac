package nats

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultStoreDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	home := func() (string, error) { return "/home/ann", nil }
	noHome := func() (string, error) { return "", errors.New("no home") }
	tests := []struct {
		euid int
		env  map[string]string
		home func() (string, error)
		want string
	}{
		{0, map[string]string{"XDG_STATE_HOME": "/x"}, home, "/var/lib/flowbus/nats"},
		{1000, map[string]string{"XDG_STATE_HOME": "/x/state"}, home, "/x/state/flowbus/nats"},
		{1000, map[string]string{"XDG_STATE_HOME": "relative"}, home, "/home/ann/.local/state/flowbus/nats"},
		{1000, nil, home, "/home/ann/.local/state/flowbus/nats"},
		{1000, nil, noHome, ".flowbus/nats"},
	}
	for _, tt := range tests {
		if got := defaultStoreDir(tt.euid, env(tt.env), tt.home); got != tt.want {
			t.Errorf("euid %d env %v: %q, want %q", tt.euid, tt.env, got, tt.want)
		}
	}
	if d := DefaultStoreDir(); strings.Contains(d, os.TempDir()) && os.TempDir() != "/" {
		t.Errorf("the default store %s is in the shared temporary directory", d)
	}
}

// TestStoreDirChecks: the store is created private, and a directory that
// another user prepared (owned by them, open to everyone, or a symlink to
// elsewhere) is refused before the server writes anything.
func TestStoreDirChecks(t *testing.T) {
	// Runs as root (as the suite does), to make directories owned by
	// another user.
	base := t.TempDir()
	// A fresh path is created 0700, parents included.
	fresh := filepath.Join(base, "state", "flowbus", "nats")
	if err := prepareStoreDir(fresh); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{fresh, filepath.Dir(fresh)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s created with mode %04o, want 0700", d, fi.Mode().Perm())
		}
	}
	if err := prepareStoreDir(fresh); err != nil {
		t.Errorf("an existing private store: %v", err)
	}

	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	victim := mk("victim", 0o700, 0)
	link := filepath.Join(base, "planted")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	sticky := mk("sticky", 0o777|os.ModeSticky, 0)
	tests := []struct {
		dir, want string
	}{
		{mk("foreign", 0o777, 65534), "owned by uid 65534"},
		{mk("foreign-private", 0o700, 65534), "owned by uid 65534"},
		{mk("open", 0o777, 0), "writable by group or others"},
		{mk("group", 0o770, 0), "writable by group or others"},
		{link, "symbolic link"},
		{filepath.Join(link, "nats"), "is a symbolic link"},
		{filepath.Join(mk("foreign-parent", 0o755, 65534), "nats"), "owned by uid 65534"},
		{filepath.Join(mk("open-parent", 0o777, 0), "nats"), "without the sticky bit"},
	}
	for _, tt := range tests {
		if err := prepareStoreDir(tt.dir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.dir, err, tt.want)
		}
	}
	if err := prepareStoreDir(filepath.Join(sticky, "nats")); err != nil {
		t.Errorf("a private store in a sticky shared directory: %v", err)
	}

	// The embedded server refuses a planted symlink and writes nothing
	// through it.
	if _, err := startEmbedded(&EmbeddedOptions{Port: -1, StoreDir: link}); err == nil || !strings.Contains(err.Error(), "store_dir") {
		t.Fatalf("startEmbedded through a planted symlink: %v", err)
	}
	if ents, _ := os.ReadDir(victim); len(ents) != 0 {
		t.Errorf("the server wrote %d entries through the symlink", len(ents))
	}
}
