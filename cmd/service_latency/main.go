// Command service_latency runs the service_latency input plugin as a
// Telegraf execd external plugin:
//
//	[[inputs.execd]]
//	  command = ["/usr/local/bin/service_latency", "-config", "/etc/telegraf/service_latency.conf", "-poll_interval_disabled"]
//	  signal = "STDIN"
//
// It fixes the traps of Telegraf's shim: the config is decoded strictly
// (unknown keys are errors with their line), log lines carry Telegraf's
// level prefix, are bounded and never block, SIGHUP re-reads the config
// instead of killing the process, and stdin EOF, SIGTERM or SIGINT cancel
// the probes in flight and end it with exit status 0 after the state has
// been saved.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/models"
	"github.com/influxdata/telegraf/plugins/common/shim"
	"google.golang.org/grpc/grpclog"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/config"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/debugprobe"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// hup receives SIGHUP from the moment package main initializes: Go's
// default would kill the process (a reload sent while a large config is
// still loading included); a signal that arrives before the plugin runs
// waits in the channel.
var hup = make(chan os.Signal, 1)

func init() { signal.Notify(hup, syscall.SIGHUP) }

func main() {
	flush := redirectStderr()
	code := run(os.Args[1:], os.Stdout, os.Stderr, hup)
	flush()
	os.Exit(code)
}

// run is main without os.Exit. The shim itself always talks to the
// process's stdin and stdout.
func run(args []string, stdout, stderr io.Writer, hup chan os.Signal) int {
	fs := flag.NewFlagSet("service_latency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "path to the plugin's config file (one [[inputs.service_latency]] table)")
	pollInterval := fs.Duration("poll_interval", time.Second, "how often to gather when not driven by stdin")
	pollDisabled := fs.Bool("poll_interval_disabled", false, "gather only when a newline arrives on stdin (use with execd signal = \"STDIN\")")
	once := fs.Bool("once", false, "gather once, print line protocol to stdout and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	debugLog := fs.Bool("debug", false, "log debug messages")
	probeName := fs.String("probe", "", "probe the service of this name once, print a trace of it to stdout and exit (0: success, 1: failed, 2: bad config or name)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionString())
		return 0
	}

	level := telegraf.Info
	if *debugLog {
		level = telegraf.Debug
	}
	// Set Telegraf's logging up before anything logs: without it every log
	// call of Telegraf's packages (the shim's included) is kept in memory
	// forever.
	if err := logger.SetupLogging(&logger.Config{Debug: *debugLog}); err != nil {
		fmt.Fprintf(stderr, "E! setting up logging: %v\n", err)
		return 1
	}
	log := newLevelLogger(stderr, level)
	// grpc-go (the grpc:// probe) logs on its own, without a level prefix
	// execd could read: its lines become our debug lines.
	grpcLog := debugWriter{log}
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(grpcLog, grpcLog, grpcLog))

	if *configFile == "" {
		log.Errorf("no config file: run with -config /path/to/service_latency.conf")
		return 2
	}
	if !*pollDisabled && !*once && *pollInterval <= 0 {
		log.Errorf("-poll_interval %s: must be positive (or use -poll_interval_disabled to gather on stdin newlines)", *pollInterval)
		return 2
	}
	probe.UserAgent = "service_latency/" + version
	service_latency.SetBuildInfo(version, buildCommit())
	if *probeName != "" {
		return debugProbe(*configFile, *probeName, stdout, log)
	}
	log.Debugf("loading %s", *configFile)
	plugin, err := load(*configFile, log)
	if err != nil {
		log.Errorf("config: %v", err)
		return 1
	}

	if *once {
		return gatherOnce(plugin, stdout, log)
	}

	go func() {
		for range hup {
			reload(plugin, *configFile, log)
		}
	}()
	// SIGTERM and SIGINT (the shim stops on them too, but only after the
	// gather in progress) and stdin EOF cancel the probes in flight.
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(quit)
	go func() {
		for range quit {
			plugin.Interrupt()
		}
	}()
	if err := watchStdin(plugin.Interrupt); err != nil {
		log.Errorf("%v", err)
		return 1
	}

	s := shim.New()
	// Not s.AddInput: it would replace our logger with the shim's, which
	// writes timestamps before the level so execd could not read it. The
	// logger is set before Init as AddInput would; Init ran in load.
	s.Input = plugin
	interval := *pollInterval
	if *pollDisabled {
		interval = shim.PollIntervalDisabled
	}
	log.Debugf("service_latency %s: %d services", versionString(), len(plugin.ServiceNames()))
	if err := s.Run(interval); err != nil {
		log.Errorf("%v", err)
		return 1
	}
	return 0
}

// debugWriter writes each line it is given as a debug line.
type debugWriter struct{ log telegraf.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debugf("grpc: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// debugProbe is -probe: compile the config (no store is opened) and trace
// one probe of the named service.
func debugProbe(path, name string, stdout io.Writer, log telegraf.Logger) int {
	f, err := config.Load(path)
	if err != nil {
		log.Errorf("config: %v", err)
		return debugprobe.BadConfig
	}
	spec, err := config.Compile(&f.Config)
	if err != nil {
		log.Errorf("config: %v", f.Locate(err))
		return debugprobe.BadConfig
	}
	defer spec.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return debugprobe.Run(ctx, &f.Config, spec, name, stdout)
}

// load reads and compiles the config file and initializes the plugin with
// our logger; every error names the file and the line.
func load(path string, log telegraf.Logger) (*service_latency.ServiceLatency, error) {
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	plugin := service_latency.New()
	plugin.Config = f.Config
	models.SetLoggerOnPlugin(plugin, log)
	if err := plugin.Init(); err != nil {
		return nil, f.Locate(err)
	}
	return plugin, nil
}

// watchStdin puts a pipe in front of the shim's stdin: newlines pass
// through, and EOF on the real stdin (Telegraf stopping) also cancels the
// probes in flight. It must run before shim.New, which takes os.Stdin.
func watchStdin(onEOF func()) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	in := os.Stdin
	os.Stdin = r
	go func() {
		br := bufio.NewReader(in)
		for {
			b, err := br.ReadByte()
			if err != nil {
				onEOF()
				w.Close()
				return
			}
			if b == '\n' {
				if _, err := w.Write([]byte{'\n'}); err != nil && !errors.Is(err, os.ErrClosed) {
					return
				}
			}
		}
	}()
	return nil
}

// reload re-reads the config file; a valid one replaces the running
// config (the state of every service whose name remains is kept), an
// invalid one is refused and the old config keeps running.
func reload(plugin *service_latency.ServiceLatency, path string, log telegraf.Logger) {
	f, err := config.Load(path)
	if err == nil {
		if err = plugin.Reconfigure(&f.Config); err != nil {
			err = f.Locate(err)
		}
	}
	if err != nil {
		log.Errorf("SIGHUP: config not reloaded, the previous one keeps running: %v", err)
		return
	}
	log.Infof("SIGHUP: config reloaded from %s: %d services", path, len(plugin.ServiceNames()))
}

func versionString() string {
	return fmt.Sprintf("%s (commit %s, %s)", version, buildCommit(), runtime.Version())
}

// buildCommit is the commit set with -ldflags, else the VCS revision Go
// recorded, else "unknown".
func buildCommit() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return c
}
