package loopback

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two real latency_target processes on 127.0.0.1 and .2: each listens on
// its own address, TimedGet spans the injected delay and calls a status
// other than 200 an error, and Stop ends both.
func TestStartTimedGetStop(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "latency_target")
	if out, err := exec.Command("go", "build", "-o", bin, "../../../cmd/latency_target").CombinedOutput(); err != nil {
		t.Fatalf("building latency_target: %v\n%s", err, out)
	}
	tg, err := Start(bin, 2, Options{Args: []string{"-delay", "20ms"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	if len(tg.Hosts) != 2 || !strings.HasPrefix(tg.Hosts[0], "127.0.0.1:") || !strings.HasPrefix(tg.Hosts[1], "127.0.0.2:") {
		t.Fatalf("hosts %v", tg.Hosts)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	d, err := TimedGet(client, "http://"+tg.Hosts[1]+"/svc/1")
	if err != nil || d < 20*time.Millisecond {
		t.Fatalf("TimedGet: %s, %v (want ≥ the 20 ms delay, no error)", d, err)
	}
	u := URL(tg.Hosts, 3, 40*time.Millisecond)
	if want := "http://" + tg.Hosts[1] + "/svc/3?delay=40ms"; u != want {
		t.Fatalf("URL: %s, want %s", u, want)
	}
	if d, err := TimedGet(client, u); err != nil || d < 40*time.Millisecond {
		t.Fatalf("TimedGet of %s: %s, %v (want ≥ its 40 ms delay, no error)", u, d, err)
	}
	if _, err := TimedGet(client, "http://"+tg.Hosts[0]+"/status/503?delay=0s"); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Fatalf("a 503: %v", err)
	}
	procs := tg.Procs
	tg.Stop()
	for _, c := range procs {
		if c.ProcessState == nil {
			t.Fatalf("target %d still running after Stop", c.Process.Pid)
		}
	}
	if err := WaitListening(tg.Hosts[0], 100*time.Millisecond); err == nil {
		t.Fatal("a stopped target still accepts")
	}
}
