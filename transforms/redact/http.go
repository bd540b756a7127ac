package redact

import (
	"net/url"
	"strings"

	flowpb "github.com/flowbus/flowbus/flow"
)

// Redacted replaces redacted values, as in Hubble
// (pkg/hubble/defaults.SensitiveValueRedacted).
const Redacted = "HUBBLE_REDACTED"

// httpRules are Hubble's HTTP redaction rules (parser/seven/http.go) with
// redaction enabled.
type httpRules struct {
	urlQuery bool
	userInfo bool
	// allow and deny are header names; at most one list is set. With
	// neither, every header value is redacted.
	allow, deny []string
}

// apply redacts h in place. It returns the URL before and after, for the
// caller to carry into the flow's Summary.
func (r *httpRules) apply(h *flowpb.HTTP) (oldURL, newURL string) {
	oldURL = h.Url
	h.Url = r.url(h.Url)
	for _, hd := range h.Headers {
		if hd != nil && r.redactHeader(hd.Key) {
			hd.Value = Redacted
		}
	}
	return oldURL, h.Url
}

// redactHeader reports whether the value of header key is redacted:
// listed in allow → kept; listed in deny → redacted; otherwise redacted
// when there is an allow list or no list at all, kept when there is only a
// deny list. Names compare case-insensitively (Hubble lower-cases both).
func (r *httpRules) redactHeader(key string) bool {
	for _, a := range r.allow {
		if strings.EqualFold(a, key) {
			return false
		}
	}
	for _, d := range r.deny {
		if strings.EqualFold(d, key) {
			return true
		}
	}
	return r.allow != nil || r.deny == nil
}

// url applies the URL rules to s. Like Hubble, it works on the parsed URL
// and writes it back with url.URL.String: a password in the user info is
// replaced (user:HUBBLE_REDACTED@host; a user without a password is left
// alone), and the query and fragment are dropped entirely. A URL that needs
// no change is returned as it is, without parsing in the common case.
//
// Hubble redacts URLs before they become text, so it never sees one that
// does not parse. flowbus does (flows read from files): such a URL is
// redacted as text, with the same rules, so nothing the rules cover gets
// through: everything from the first '?' or '#' is cut, and a password
// between "//user:" and the '@' that ends the authority is replaced.
func (r *httpRules) url(s string) string {
	needUser := r.userInfo && strings.IndexByte(s, '@') >= 0
	needQuery := r.urlQuery && strings.ContainsAny(s, "?#")
	if !needUser && !needQuery {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return r.urlText(s)
	}
	changed := false
	if needUser && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Redacted)
			changed = true
		}
	}
	if needQuery && (u.RawQuery != "" || u.Fragment != "") {
		u.RawQuery = ""
		u.Fragment = ""
		u.RawFragment = ""
		changed = true
	}
	if !changed {
		return s
	}
	return u.String()
}

// urlText is url for text that url.Parse rejects.
func (r *httpRules) urlText(s string) string {
	if r.urlQuery {
		if i := strings.IndexAny(s, "?#"); i >= 0 {
			s = s[:i]
		}
	}
	if !r.userInfo {
		return s
	}
	start := strings.Index(s, "//")
	if start < 0 {
		return s
	}
	start += 2
	end := len(s)
	if i := strings.IndexAny(s[start:], "/?#"); i >= 0 {
		end = start + i
	}
	authority := s[start:end]
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return s
	}
	colon := strings.IndexByte(authority[:at], ':')
	if colon < 0 {
		return s
	}
	return s[:start+colon+1] + Redacted + s[start+at:]
}
