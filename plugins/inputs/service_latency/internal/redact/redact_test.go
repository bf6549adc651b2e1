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
