package redact

import "testing"

func TestURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:secret@127.0.0.1/x":  "http://u@127.0.0.1/x",
		"http://u@127.0.0.1/x":         "http://u@127.0.0.1/x",
		"http://127.0.0.1/x?a=b":       "http://127.0.0.1/x?a=b",
		"redis://u:SECRETR5@[::1:1/0":  "redis://u@[::1:1/0",
		"tcp://u:p%zz@127.0.0.1:1":     "tcp://u@127.0.0.1:1",
		"u:SECRETA1@127.0.0.1:16379":   "u@127.0.0.1:16379",
		"http://a:b@c@127.0.0.1:8/pth": "http://a@127.0.0.1:8/pth",
	} {
		if got := URL(in); got != want {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestText(t *testing.T) {
	for in, want := range map[string]string{
		`redis: url: parse "redis://u:SECRETR5@[::1:1/0": missing ']' in host`: `redis: url: parse "redis://u@[::1:1/0": missing ']' in host`,
		`parse "redis://u:SECRET%zz@127.0.0.1": invalid userinfo`:              `parse "redis://u@127.0.0.1": invalid userinfo`,
		`address "u:SECRETA1@127.0.0.1:16379": want host:port`:                 `address "u@127.0.0.1:16379": want host:port`,
		`dial tcp 127.0.0.1:6379: connect: connection refused`:                 `dial tcp 127.0.0.1:6379: connect: connection refused`,
		`mail me at ops@example`:                                               `mail me at ops@example`,
		`GET http://user:pw@127.0.0.1:80/a and https://x:y@h/`:                 `GET http://user@127.0.0.1:80/a and https://x@h/`,
		`Get "http://u:pw@host/x": refused`:                                    `Get "http://u@host/x": refused`,
		`proxy http://:pw@h:1 down`:                                            `proxy http://@h:1 down`,
		`an address a:b@c`:                                                     `an address a@c`,
		`http://user@host/ stays`:                                              `http://user@host/ stays`,
	} {
		if got := Text(in); got != want {
			t.Errorf("Text(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}

func TestURLQueryCredentials(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"http://h/x?token=abc", "http://h/x?token=REDACTED"},
		{"http://h/x?a=1&TOKEN=abc&b=2", "http://h/x?a=1&TOKEN=REDACTED&b=2"},
		{"https://h/?access_token=a.b.c", "https://h/?access_token=REDACTED"},
		{"https://h/?key=k1&apikey=k2&api_key=k3&x_api_key=k4&X-Api-Key=k5", "https://h/?key=REDACTED&apikey=REDACTED&api_key=REDACTED&x_api_key=REDACTED&X-Api-Key=REDACTED"},
		{"http://h/?password=p&passwd=p&pwd=p&secret=s&client_secret=s", "http://h/?password=REDACTED&passwd=REDACTED&pwd=REDACTED&secret=REDACTED&client_secret=REDACTED"},
		{"http://h/?signature=s&sig=s&X-Amz-Signature=s&X-Amz-Credential=c", "http://h/?signature=REDACTED&sig=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"},
		{"http://h/?auth=a&Authorization=Bearer%20x&credential=c&accessToken=t&apiKey=k", "http://h/?auth=REDACTED&Authorization=REDACTED&credential=REDACTED&accessToken=REDACTED&apiKey=REDACTED"},
		{"http://h/?api%5Fkey=k", "http://h/?api%5Fkey=REDACTED"},
		{"http://h/?keyboard=1&monkey=2&passenger=3&tokens_left=4&page=2", "http://h/?keyboard=1&monkey=2&passenger=3&tokens_left=4&page=2"},
		{"http://h/?token=&token", "http://h/?token=&token"},
		{"http://h/?a=1;sig=x", "http://h/?a=1;sig=REDACTED"},
		{"http://h/cb#access_token=t&state=s", "http://h/cb#access_token=REDACTED&state=s"},
		{"http://h/?x=1#id_token=t", "http://h/?x=1#id_token=REDACTED"},
		{"http://u:pw@h:8/x?token=abc&q=%20", "http://u@h:8/x?token=REDACTED&q=%20"},
		{"grpc://h:1/svc", "grpc://h:1/svc"},
		{"http://[::1:1/x?token=t", "http://[::1:1/x?token=REDACTED"}, // does not parse
		{"dns://127.0.0.1/a.test?type=A&transport=tcp", "dns://127.0.0.1/a.test?type=A&transport=tcp"},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestTextQueryCredentials(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`Get "http://h/x?token=abc": refused`, `Get "http://h/x?token=REDACTED": refused`},
		{`Get "http://u:pw@h/x?api_key=k&a=b": EOF`, `Get "http://u@h/x?api_key=REDACTED&a=b": EOF`},
		{`parse "?password=hunter2 and more"`, `parse "?password=REDACTED and more"`},
		{`redirect to https://h/cb#access_token=t&state=1 failed`, `redirect to https://h/cb#access_token=REDACTED&state=1 failed`},
		{`a=b c=d`, `a=b c=d`},
		{`http://h/?page=2&q=x`, `http://h/?page=2&q=x`},
		{`token=abc alone`, `token=abc alone`}, // not in a query: left as is
	} {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q)\n = %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestIsCredentialName(t *testing.T) {
	for name, want := range map[string]bool{
		"token": true, "Token": true, "refresh_token": true, "X-Auth-Token": true, "x_api_key": true,
		"privateKey": true, "session_id": false, "sessionid": true, "key": true, "keys": false,
		"monkey": false, "page": false, "sig": true, "signature_version": false, "": false,
	} {
		if got := IsCredentialName(name); got != want {
			t.Errorf("IsCredentialName(%q) = %v, want %v", name, got, want)
		}
	}
}

// A URL without credentials comes back as it is, without an allocation
// (URL runs once per service at start-up: 100,000 times).
func TestURLWithoutCredentialsAllocatesNothing(t *testing.T) {
	for _, u := range []string{
		"http://127.0.0.1:8080/svc/1?delay=1ms",
		"https://example.test/a?x=1&client_id=7#frag=2",
		"http://h/?keyboard=1;monkey=2",
	} {
		if got := URL(u); got != u {
			t.Fatalf("URL(%q) = %q", u, got)
		}
		if n := testing.AllocsPerRun(100, func() { _ = URL(u) }); n != 0 {
			t.Errorf("URL(%q): %.0f allocations", u, n)
		}
	}
	if got := URL("http://h/a@b?x=1"); got != "http://h/a@b?x=1" {
		t.Errorf("an '@' in the path: %q", got)
	}
	if got := URL("http://h/x?a=1#Api-Key=s3"); got != "http://h/x?a=1#Api-Key=REDACTED" {
		t.Errorf("a credential in the fragment only: %q", got)
	}
	if got := URL("http://h/x?Api-Key=s3&a=1"); got != "http://h/x?Api-Key=REDACTED&a=1" {
		t.Errorf("a credential after the fast check: %q", got)
	}
}
