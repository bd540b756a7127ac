package nats

import (
	"github.com/nats-io/nats.go"

	"github.com/flowbus/flowbus/internal/sinkutil"
	"github.com/flowbus/flowbus/pipeline"
)

// Auth is how a NATS client proves who it is: at most one of a credentials
// file, an NKey seed and a token (secrets are read from files, never
// inline), and TLS. The nats source embeds it too.
type Auth struct {
	CredentialsFile string        `yaml:"credentials_file" doc:"a NATS credentials file (user JWT and seed); at most one of credentials_file, nkey_file and token_file"`
	NKeyFile        string        `yaml:"nkey_file" doc:"a file holding an NKey seed"`
	TokenFile       string        `yaml:"token_file" doc:"a file holding an authentication token"`
	TLS             *sinkutil.TLS `yaml:"tls" doc:"connect with TLS"`
}

// ClientOptions returns the client options a asks for, its files relative
// to b.Dir, or errors positioned at their keys.
func (a *Auth) ClientOptions(b *pipeline.Build) ([]nats.Option, []error) {
	var opts []nats.Option
	var errs []error
	set := 0
	if a.CredentialsFile != "" {
		set++
		if _, err := sinkutil.ReadSecretFile("credentials_file", b.Dir, a.CredentialsFile); err != nil {
			errs = append(errs, b.Errorf("credentials_file", "nats: %v", err))
		}
		opts = append(opts, nats.UserCredentials(sinkutil.Path(b.Dir, a.CredentialsFile)))
	}
	if a.NKeyFile != "" {
		set++
		// Read it first: the nats client's errors print the path.
		if _, err := sinkutil.ReadSecretFile("nkey_file", b.Dir, a.NKeyFile); err != nil {
			errs = append(errs, b.Errorf("nkey_file", "nats: %v", err))
		} else if opt, err := nats.NkeyOptionFromSeed(sinkutil.Path(b.Dir, a.NKeyFile)); err != nil {
			errs = append(errs, b.Errorf("nkey_file", "nats: nkey_file: %v", err))
		} else {
			opts = append(opts, opt)
		}
	}
	if a.TokenFile != "" {
		set++
		if tok, err := sinkutil.ReadSecret("token_file", b.Dir, a.TokenFile); err != nil {
			errs = append(errs, b.Errorf("token_file", "nats: %v", err))
		} else {
			opts = append(opts, nats.Token(tok))
		}
	}
	if set > 1 {
		errs = append(errs, b.Errorf("", "nats: set one of credentials_file, nkey_file and token_file"))
	}
	if a.TLS != nil {
		if tc, err := a.TLS.Config(b.Dir); err != nil {
			errs = append(errs, b.Errorf("tls", "nats: %v", err))
		} else {
			opts = append(opts, nats.Secure(tc))
		}
	}
	return opts, errs
}
