package redact

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// FuzzURL checks the URL rules on arbitrary text: they never panic, and
// what they cover never survives: with url_query no query or fragment is
// left, and with user_info a password the URL had is replaced.
func FuzzURL(f *testing.F) {
	for _, s := range []string{
		"http://user:secret@host:8080/p?a=1#f", "http://host/p?", "/api?x=1", "http://u:pw@host/%zz?q=1#x",
		"http://u:pw@host:port/x?q", "mailto:a:b@c?d", "//u:p@h/?#", "http://[::1]:80/?q", "",
	} {
		f.Add(s, true, true)
	}
	f.Fuzz(func(t *testing.T, s string, query, user bool) {
		r := &httpRules{urlQuery: query, userInfo: user}
		out := r.url(s)
		if query {
			if u, err := url.Parse(out); err == nil {
				if u.RawQuery != "" || u.Fragment != "" {
					t.Errorf("url(%q) = %q keeps a query or fragment", s, out)
				}
			} else if strings.ContainsAny(out, "?#") {
				t.Errorf("url(%q) = %q keeps a query or fragment", s, out)
			}
		}
		if user {
			in, err := url.Parse(s)
			if err != nil || in.User == nil {
				return
			}
			if pw, ok := in.User.Password(); ok && pw != Redacted {
				u, err := url.Parse(out)
				if err != nil {
					t.Fatalf("url(%q) = %q does not parse: %v", s, out, err)
				}
				if got, _ := u.User.Password(); got != Redacted {
					t.Errorf("url(%q) = %q keeps password %q", s, out, got)
				}
			}
		}
		if !query && !user && out != s {
			t.Errorf("no rules, but url(%q) = %q", s, out)
		}
	})
}

// FuzzIP checks pseudonymisation on arbitrary text: no panic, and a result
// that is either an address of the input's family or the redaction marker.
func FuzzIP(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "fd00::1", "::ffff:1.2.3.4", "fe80::1%eth0", "1.2.3", "", "::"} {
		f.Add(s)
	}
	h := newHMACMapper([]byte(testKey))
	tr := newTruncateMapper(24, 48)
	f.Fuzz(func(t *testing.T, s string) {
		for _, m := range []*ipMapper{h, tr} {
			out := m.Map(s)
			in, err := netip.ParseAddr(s)
			switch {
			case s == "":
				if out != "" {
					t.Errorf("empty → %q", out)
				}
			case err != nil:
				if out != Redacted {
					t.Errorf("%q → %q, want %s", s, out, Redacted)
				}
			default:
				o, err := netip.ParseAddr(out)
				if err != nil || o.Is4() != in.Is4() || o.Is4In6() != in.Is4In6() || o.Zone() != in.Zone() {
					t.Errorf("%q → %q: family or zone changed (%v)", s, out, err)
				}
			}
		}
	})
}
