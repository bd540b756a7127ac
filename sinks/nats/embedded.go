package nats

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure the in-process server of `url: embedded`.
type EmbeddedOptions struct {
	// Port on 127.0.0.1; 0 means DefaultEmbeddedPort, -1 a free port.
	Port int `yaml:"port" default:"4222" doc:"the client port on 127.0.0.1 (NATS's usual one, so the nats CLI finds it); -1 picks a free port"`
	// StoreDir holds the JetStream file store; default: see
	// DefaultStoreDir.
	StoreDir string `yaml:"store_dir" doc:"the directory of the JetStream file store, created 0700; default: /var/lib/flowbus/nats as root, else $XDG_STATE_HOME/flowbus/nats (~/.local/state/flowbus/nats); a symlink, a directory owned by another user or writable by group or others is refused"`
	// SyncInterval is how often the store is fsynced: a duration, or
	// "always" to sync every message before acknowledging it. Default:
	// nats-server's (2 minutes).
	SyncInterval string `yaml:"sync_interval" example:"2m" doc:"how often the store is fsynced: a duration, or always (every message before it is acknowledged); default: the server's, 2m"`
	// MaxStore caps the file store in bytes; 0 lets the server choose.
	MaxStore int64 `yaml:"max_store" default:"0" doc:"the most bytes the file store holds; 0 lets the server choose (a share of the free disk space)"`
}

// DefaultEmbeddedPort is NATS's usual client port, so that the nats CLI
// finds the embedded server without options.
const DefaultEmbeddedPort = 4222

func (o *EmbeddedOptions) check() error {
	if o.Port < -1 || o.Port > 65535 {
		return fmt.Errorf("port %d out of range", o.Port)
	}
	if _, _, err := o.sync(); err != nil {
		return err
	}
	return nil
}

func (o *EmbeddedOptions) sync() (always bool, every time.Duration, err error) {
	switch o.SyncInterval {
	case "":
		return false, 0, nil
	case "always":
		return true, 0, nil
	}
	d, err := time.ParseDuration(o.SyncInterval)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("sync_interval %q: want a duration like 10s, or always", o.SyncInterval)
	}
	return false, d, nil
}

func (o *EmbeddedOptions) storeDir() string {
	if o.StoreDir != "" {
		return o.StoreDir
	}
	return DefaultStoreDir()
}

// DefaultStoreDir is the embedded server's store when store_dir is not
// set: /var/lib/flowbus/nats for root, otherwise
// $XDG_STATE_HOME/flowbus/nats, or ~/.local/state/flowbus/nats when
// XDG_STATE_HOME is unset. (Not the shared temporary directory, where
// another user could plant the directory or a symlink first.)
func DefaultStoreDir() string {
	return defaultStoreDir(os.Geteuid(), os.Getenv, os.UserHomeDir)
}

func defaultStoreDir(euid int, getenv func(string) string, home func() (string, error)) string {
	if euid == 0 {
		return "/var/lib/flowbus/nats"
	}
	if x := getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "flowbus", "nats")
	}
	h, err := home()
	if err != nil || h == "" {
		// No home: the working directory, which the user chose.
		return filepath.Join(".flowbus", "nats")
	}
	return filepath.Join(h, ".local", "state", "flowbus", "nats")
}

// prepareStoreDir creates dir (mode 0700, parents too) when it does not
// exist and checks that it is private: dir must be a real directory (not a
// symlink) owned by this user and not writable by group or others, and its
// parent must not be a symlink and must be owned by this user or root and,
// when others may write to it, have the sticky bit (as /tmp has). Anything
// else is refused: another user could read the stored flows, or replace
// the store.
func prepareStoreDir(dir string) error {
	dir = filepath.Clean(dir)
	euid := uint32(os.Geteuid())
	parent := filepath.Dir(dir)
	// The parent is checked before anything is created under it, so that
	// nothing is made through a planted symlink.
	if _, err := os.Lstat(parent); err == nil && parent != dir {
		if err := checkParent(parent, dir, euid); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link; refusing to store there (use the real path, owned by this user, mode 0700)", dir)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case ok && st.Uid != euid:
		return fmt.Errorf("%s is owned by uid %d, not by this user (uid %d); refusing to store there", dir, st.Uid, euid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s is writable by group or others (mode %04o); refusing to store there (chmod 0700 it)", dir, fi.Mode().Perm())
	}
	if parent == dir {
		return nil
	}
	return checkParent(parent, dir, euid)
}

// checkParent checks the directory holding the store dir.
func checkParent(parent, dir string, euid uint32) error {
	pi, err := os.Lstat(parent)
	if err != nil {
		return err
	}
	pst, ok := pi.Sys().(*syscall.Stat_t)
	switch {
	case pi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s (the parent of %s) is a symbolic link; refusing to store there", parent, dir)
	case ok && pst.Uid != euid && pst.Uid != 0:
		return fmt.Errorf("%s (the parent of %s) is owned by uid %d, neither this user (uid %d) nor root; refusing to store there", parent, dir, pst.Uid, euid)
	case pi.Mode().Perm()&0o022 != 0 && pi.Mode()&fs.ModeSticky == 0:
		return fmt.Errorf("%s (the parent of %s) is writable by group or others without the sticky bit (mode %04o); refusing to store there", parent, dir, pi.Mode().Perm())
	}
	return nil
}

func (o *EmbeddedOptions) port() int {
	if o.Port == 0 {
		return DefaultEmbeddedPort
	}
	return o.Port
}

// embeddedServer is a running in-process server, shared by the sinks that
// configure the same port and store.
type embeddedServer struct {
	key      string
	srv      *server.Server
	storeDir string
	refs     int
}

var embeddedServers = struct {
	sync.Mutex
	m map[string]*embeddedServer
}{m: map[string]*embeddedServer{}}

func acquireEmbedded(o *EmbeddedOptions) (*embeddedServer, error) {
	key := strconv.Itoa(o.port()) + "|" + o.storeDir() + "|" + o.SyncInterval
	embeddedServers.Lock()
	defer embeddedServers.Unlock()
	if e := embeddedServers.m[key]; e != nil {
		e.refs++
		return e, nil
	}
	srv, err := startEmbedded(o)
	if err != nil {
		return nil, err
	}
	e := &embeddedServer{key: key, srv: srv, storeDir: o.storeDir(), refs: 1}
	if o.port() != -1 {
		embeddedServers.m[key] = e
	}
	return e, nil
}

func releaseEmbedded(e *embeddedServer) {
	embeddedServers.Lock()
	e.refs--
	last := e.refs == 0
	if last && embeddedServers.m[e.key] == e {
		delete(embeddedServers.m, e.key)
	}
	embeddedServers.Unlock()
	if last {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	}
}

func (e *embeddedServer) clientURL() string { return e.srv.ClientURL() }

// startEmbedded runs a JetStream-enabled server on 127.0.0.1.
func startEmbedded(o *EmbeddedOptions) (*server.Server, error) {
	always, every, err := o.sync()
	if err != nil {
		return nil, err
	}
	dir := o.storeDir()
	if err := prepareStoreDir(dir); err != nil {
		return nil, fmt.Errorf("store_dir: %w", err)
	}
	if p := o.port(); p > 0 {
		// Fail fast with a clear message; the server itself only logs it.
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return nil, fmt.Errorf("listen on 127.0.0.1:%d: %w", p, err)
		}
		l.Close()
	}
	opts := &server.Options{
		ServerName:            "flowbus-embedded",
		Host:                  "127.0.0.1",
		Port:                  o.port(),
		NoLog:                 true,
		NoSigs:                true,
		JetStream:             true,
		StoreDir:              dir,
		SyncAlways:            always,
		SyncInterval:          every,
		JetStreamMaxStore:     o.MaxStore,
		MaxPayload:            8 << 20,
		DisableShortFirstPing: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("server on 127.0.0.1:%d not ready after 10s (port in use?)", o.port())
	}
	return srv, nil
}
