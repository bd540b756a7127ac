package codec

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidString(t *testing.T) {
	for _, s := range []string{
		"", "a", "abc", "abcdefg", "abcdefgh", "abcdefghi",
		"k8s:io.kubernetes.pod.namespace=default", "4b8f3a1e-2c7d-4e9f-8a6b-1d2c3e4f5a6b",
		"é", "héllo", "こんにちは世界", "\xff", "a\xff", "abcdefgh\xff", "\xffabcdefgh",
		"abcdefg\xe2\x82", "abcdefghijklmno\xe2\x82\xac", "abcdefghijklmnop\xc0\xaf",
		"\xed\xa0\x80", strings.Repeat("x", 63) + "\x80", strings.Repeat("y", 64),
	} {
		if got, want := validString(s), utf8.ValidString(s); got != want {
			t.Errorf("validString(%q) = %v, utf8.ValidString says %v", s, got, want)
		}
	}
}

func FuzzValidString(f *testing.F) {
	for _, s := range []string{"", "abcdefgh\xff", "héllo wörld", "\xf0\x9f\x98\x80abcdefgh"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validString(s), utf8.ValidString(s); got != want {
			t.Fatalf("validString(%q) = %v, utf8.ValidString says %v", s, got, want)
		}
	})
}
