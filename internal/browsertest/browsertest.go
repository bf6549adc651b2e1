// Package browsertest drives Debian's Chromium headless (with chromedp)
// for tests of the operator's page: one browser per test, a fresh profile
// in the test's temporary directory, the flags this machine needs (no
// sandbox as root, no GPU, no QUIC, no background or component traffic:
// only loopback pages are loaded). Tests skip when no Chromium is
// installed (make deps installs it). Only tests import it.
package browsertest

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Path finds Chromium: $CHROMIUM, else chromium or chromium-browser on
// $PATH; "" when there is none.
func Path() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts a headless Chromium for t (window width × height) and returns
// its context; the browser ends with the test. It skips t without
// Chromium.
func New(t testing.TB, width, height int) context.Context {
	t.Helper()
	bin := Path()
	if bin == "" {
		t.Skip("no chromium (apt-get install chromium, or make deps)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium-profile")),
		chromedp.WindowSize(width, height),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelA()
	})
	// start it now: the first Run allocates the browser
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Logf("chromium started in %s", time.Since(start).Round(time.Millisecond))
	return ctx
}

// CheckPNG decodes a screenshot and fails t unless it is a real picture:
// its luminance varies (not one flat colour) and it has more than a few
// colours.
func CheckPNG(t testing.TB, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the screenshot is no PNG: %v", err)
	}
	v, colours := Variance(img)
	if v < 50 || colours < 8 {
		t.Fatalf("the screenshot looks blank: luminance variance %.1f, %d colours", v, colours)
	}
	return img
}

// Variance returns the variance of img's luminance (0..255 scale) and how
// many distinct colours it has (counted up to 1,000).
func Variance(img image.Image) (float64, int) {
	var n, sum, sq float64
	seen := map[[3]uint32]bool{}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y++ {
		for x := bnd.Min.X; x < bnd.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			l := (0.299*float64(r) + 0.587*float64(g) + 0.114*float64(b)) / 257
			n++
			sum += l
			sq += l * l
			if len(seen) < 1000 {
				seen[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	m := sum / n
	return sq/n - m*m, len(seen)
}

// Screenshot captures the viewport, checks it (CheckPNG) and writes it to
// dir/name; it returns the bytes.
func Screenshot(t testing.TB, ctx context.Context, dir, name string) []byte {
	t.Helper()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	CheckPNG(t, b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(b))
	return b
}

// Eval evaluates a JavaScript expression and returns its value as T.
func Eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// WaitJS waits (up to timeout) until a JavaScript expression is truthy.
func WaitJS(t testing.TB, ctx context.Context, expr string, timeout time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}
