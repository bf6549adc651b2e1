// Package redact removes credentials from what the plugin shows: URLs in
// tags and logs, and free text such as the errors of libraries that echo
// the string they failed to parse. Every path that prints a URL, an
// address or an error uses it, so there is one rule for what is hidden.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// URL returns rawURL with the password of its userinfo removed
// ("http://user:pw@host/" → "http://user@host/"). A URL that does not
// parse is redacted textually: everything between the first ':' of the
// userinfo and the last '@' of the authority is dropped.
func URL(rawURL string) string {
	if !strings.Contains(rawURL, "//") {
		return Text(rawURL) // an address, or opaque: no userinfo to parse
	}
	u, err := url.Parse(rawURL)
	if err == nil {
		if u.User == nil {
			return rawURL
		}
		if _, has := u.User.Password(); !has {
			return rawURL
		}
		u.User = url.User(u.User.Username())
		return u.String()
	}
	i := strings.Index(rawURL, "://")
	auth := rawURL[i+3:]
	if j := strings.IndexAny(auth, "/?#"); j >= 0 {
		auth = auth[:j]
	}
	at := strings.LastIndexByte(auth, '@')
	if at < 0 {
		return rawURL
	}
	c := strings.IndexByte(auth[:at], ':')
	if c < 0 {
		return rawURL
	}
	return rawURL[:i+3+c] + rawURL[i+3+at:]
}

var (
	// schemeUserinfo: the password of a URL's userinfo anywhere in a text
	// ("redis://u:pw@host", also inside quotes).
	schemeUserinfo = regexp.MustCompile(`(://[^/@:\s"'<>]*):[^\s"'<>]*@`)
	// bareUserinfo: "user:password@host" without a scheme (an address
	// someone wrote with credentials in it), at the start of a word or
	// after a quote.
	bareUserinfo = regexp.MustCompile(`(^|[\s"'(=])([^\s"'(/@:=]+):[^\s"'/@]*@`)
)

// Text removes URL and address passwords from a message ("redis://u:pw@h"
// → "redis://u@h", "u:pw@host:6379" → "u@host:6379"). It is the last line
// of defence before a line is logged or served: errors should carry no
// credentials to begin with.
func Text(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	s = schemeUserinfo.ReplaceAllString(s, "$1@")
	return bareUserinfo.ReplaceAllString(s, "$1$2@")
}
