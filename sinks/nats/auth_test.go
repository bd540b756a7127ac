package nats

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/flowbus/flowbus/internal/sinktest"
	"github.com/flowbus/flowbus/pipeline"
)

// runServer starts a plain nats-server (no JetStream) for auth tests.
func runServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// publishOne writes a small batch through a core sink and checks that a
// subscriber on the same connection receives it.
func publishOne(t *testing.T, s *Sink) {
	t.Helper()
	sub, err := s.nc.SubscribeSync("auth.>")
	if err != nil {
		t.Fatal(err)
	}
	s.nc.Flush()
	b := sinktest.Batch(0, 5)
	defer b.Release()
	if failed, err := s.Write(context.Background(), b); failed != 0 || err != nil {
		t.Fatal(failed, err)
	}
	for i := 0; i < 5; i++ {
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTokenAuth(t *testing.T) {
	srv := runServer(t, &server.Options{Authorization: "t0ken-secret"})
	tok := writeFile(t, "token", "t0ken-secret\n")
	s := newSink(t, "json", fmt.Sprintf("url: %s\nsubject: auth.{{ verdict }}\ntoken_file: %s\n", srv.ClientURL(), tok))
	publishOne(t, s)

	bad := writeFile(t, "bad", "nope-wrong")
	s2, err := pipeline.Make(sinktest.Build("nats", "json"), sinktest.Node(t, fmt.Sprintf("url: %s\nsubject: a\ntoken_file: %s\n", srv.ClientURL(), bad)), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	err = s2.Start(context.Background())
	if err == nil {
		t.Fatal("Start with a wrong token succeeded")
	}
	if strings.Contains(err.Error(), "nope-wrong") {
		t.Errorf("error leaks the token: %v", err)
	}
}

func TestNKeyAuth(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	srv := runServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	seedFile := writeFile(t, "user.nk", string(seed)+"\n")
	s := newSink(t, "json", fmt.Sprintf("url: %s\nsubject: auth.{{ verdict }}\nnkey_file: %s\n", srv.ClientURL(), seedFile))
	publishOne(t, s)
}

func TestTLS(t *testing.T) {
	pki := sinktest.NewPKI(t)
	srv := runServer(t, &server.Options{TLSConfig: pki.Server, TLSVerify: true, TLSTimeout: 5})
	s := newSink(t, "json", fmt.Sprintf("url: %s\nsubject: auth.{{ verdict }}\ntls: {ca_file: %s, cert_file: %s, key_file: %s}\n",
		srv.ClientURL(), pki.CAFile, pki.ClientCert, pki.ClientKey))
	publishOne(t, s)

	s2, err := pipeline.Make(sinktest.Build("nats", "json"), sinktest.Node(t, fmt.Sprintf("url: %s\nsubject: a\n", srv.ClientURL())), New)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	if err := s2.Start(context.Background()); err == nil {
		t.Error("Start without TLS succeeded against a TLS server")
	}
}

// TestCredentialsFile: decentralised JWT auth with a .creds file (user JWT
// and seed), against a server trusting a test operator.
func TestCredentialsFile(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	op, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.IssuerAccount = apub
	ujwt, err := uc.Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	useed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	srv := runServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{op}, AccountResolver: resolver})
	file := writeFile(t, "flowbus.creds", string(creds))
	s := newSink(t, "json", fmt.Sprintf("url: %s\nsubject: auth.{{ verdict }}\ncredentials_file: %s\n", srv.ClientURL(), file))
	publishOne(t, s)
}
