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

// Redacted replaces the value of a credential in a URL's query (and
// fragment): token=abc → token=REDACTED.
const Redacted = "REDACTED"

// URL returns rawURL with the password of its userinfo removed
// ("http://user:pw@host/" → "http://user@host/") and the values of
// credential-like query (and fragment) parameters replaced by REDACTED
// ("?token=abc&x=1" → "?token=REDACTED&x=1", see IsCredentialName). The
// rest of the URL is kept byte for byte. A URL that does not parse is
// redacted textually: everything between the first ':' of the userinfo and
// the last '@' of the authority is dropped.
func URL(rawURL string) string {
	if !strings.Contains(rawURL, "//") {
		return Text(rawURL) // an address, or opaque: no userinfo to parse
	}
	return redactQuery(userinfo(rawURL))
}

func userinfo(rawURL string) string {
	if !strings.Contains(rawURL, "@") {
		return rawURL // no userinfo, parsed or not (and no url.Parse per service at start-up)
	}
	u, err := url.Parse(rawURL)
	if err == nil {
		if u.User == nil {
			return rawURL
		}
		if _, has := u.User.Password(); !has {
			return rawURL
		}
		// Only the userinfo changes: the rest stays as written.
		i := strings.Index(rawURL, "//")
		auth := rawURL[i+2:]
		if j := strings.IndexAny(auth, "/?#"); j >= 0 {
			auth = auth[:j]
		}
		if at := strings.LastIndexByte(auth, '@'); at >= 0 {
			return rawURL[:i+2] + url.User(u.User.Username()).String() + rawURL[i+2+at:]
		}
		u.User = url.User(u.User.Username())
		return u.String()
	}
	i := strings.Index(rawURL, "://")
	if i < 0 {
		return rawURL
	}
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

// redactQuery replaces the values of credential parameters in the query
// and the fragment of rawURL.
func redactQuery(rawURL string) string {
	q := strings.IndexByte(rawURL, '?')
	h := strings.IndexByte(rawURL, '#')
	if q < 0 && h < 0 || !hasCredentialParam(rawURL[min(uint(q), uint(h))+1:]) {
		return rawURL // nothing to redact: nothing built
	}
	var b strings.Builder
	rest := rawURL
	if q >= 0 && (h < 0 || q < h) {
		b.WriteString(rest[:q+1])
		rest = rest[q+1:]
		end := strings.IndexByte(rest, '#')
		if end < 0 {
			end = len(rest)
		}
		b.WriteString(redactParams(rest[:end]))
		rest = rest[end:]
	}
	if strings.HasPrefix(rest, "#") || (q < 0 && h >= 0) {
		i := strings.IndexByte(rest, '#')
		b.WriteString(rest[:i+1])
		rest = redactParams(rest[i+1:])
	}
	b.WriteString(rest)
	return b.String()
}

// redactParams redacts the credential values of "a=1&token=x" (also with
// ';' separators).
func redactParams(s string) string {
	if !strings.Contains(s, "=") || !hasCredentialParam(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] != '&' && s[j] != ';' {
			j++
		}
		b.WriteString(redactParam(s[i:j]))
		if j < len(s) {
			b.WriteByte(s[j])
		}
		i = j + 1
	}
	return b.String()
}

// hasCredentialParam reports whether redactParams would change s, or any
// part of it after a '#' (most queries carry no credential: then nothing
// is built).
func hasCredentialParam(s string) bool {
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j] != '&' && s[j] != ';' && s[j] != '#' {
			j++
		}
		if p := s[i:j]; redactParam(p) != p {
			return true
		}
		i = j + 1
	}
	return false
}

func redactParam(p string) string {
	name, value, has := strings.Cut(p, "=")
	if !has || value == "" || value == Redacted {
		return p
	}
	n := name
	if un, err := url.QueryUnescape(name); err == nil {
		n = un
	}
	if !IsCredentialName(n) {
		return p
	}
	return name + "=" + Redacted
}

// credentialWords are the names (and, after a '_', the name endings) of
// query parameters whose value is a credential.
var credentialWords = []string{
	"token", "access_token", "key", "apikey", "api_key", "password", "passwd", "pwd", "pass",
	"secret", "signature", "sig", "auth", "authorization", "credential", "credentials", "jwt",
	"session", "sessionid", "passphrase",
}

// IsCredentialName reports whether a query parameter named name carries a
// credential: compared case-insensitively, with '-', '.', ' ' and a
// camelCase boundary read as '_', name is one of credentialWords or ends
// in '_' followed by one ("X-Api-Key", "accessToken", "client_secret",
// "X-Amz-Signature" are; "keyboard", "monkey", "passenger" are not).
func IsCredentialName(name string) bool {
	n := normalizeName(name)
	for _, w := range credentialWords {
		if n == w || strings.HasSuffix(n, "_"+w) {
			return true
		}
	}
	return false
}

func normalizeName(name string) string {
	if isNormal(name) {
		return name // nothing to rewrite: no allocation
	}
	var b strings.Builder
	b.Grow(len(name) + 4)
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			if i > 0 && name[i-1] >= 'a' && name[i-1] <= 'z' {
				b.WriteByte('_')
			}
			b.WriteByte(c + 'a' - 'A')
		case c == '-' || c == '.' || c == ' ':
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// isNormal: name has no upper-case letter and no '-', '.' or ' ', so
// normalizeName would return it as it is.
func isNormal(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == ' ' {
			return false
		}
	}
	return true
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

// queryParam: a parameter of a query or fragment in a text ("?token=x",
// "&api_key=x", "#access_token=x"), its value up to a separator, a space
// or a quote.
var queryParam = regexp.MustCompile(`([?&;#])([^\s"'<>&;=?#]+)=([^\s"'<>&;#]*)`)

// Text removes URL and address passwords from a message ("redis://u:pw@h"
// → "redis://u@h", "u:pw@host:6379" → "u@host:6379") and the values of
// credential parameters of the URLs in it ("?token=abc" →
// "?token=REDACTED", as URL does). It is the last line of defence before
// a line is logged or served: errors should carry no credentials to begin
// with.
func Text(s string) string {
	if strings.Contains(s, "=") {
		s = queryParam.ReplaceAllStringFunc(s, func(m string) string {
			sub := queryParam.FindStringSubmatch(m)
			if sub[3] == "" || sub[3] == Redacted {
				return m
			}
			n := sub[2]
			if un, err := url.QueryUnescape(n); err == nil {
				n = un
			}
			if !IsCredentialName(n) {
				return m
			}
			return sub[1] + sub[2] + "=" + Redacted
		})
	}
	if !strings.Contains(s, "@") {
		return s
	}
	s = schemeUserinfo.ReplaceAllString(s, "$1@")
	return bareUserinfo.ReplaceAllString(s, "$1$2@")
}
