// Command service_latency runs the service_latency input plugin as a
// Telegraf execd external plugin:
//
//	[[inputs.execd]]
//	  command = ["/usr/local/bin/service_latency", "-config", "/etc/telegraf/service_latency.conf", "-poll_interval_disabled"]
//	  signal = "STDIN"
//
// It fixes the traps of Telegraf's shim: the config is decoded strictly
// (unknown keys are errors with their line), log lines carry Telegraf's
// level prefix and are not kept in memory, SIGHUP re-reads the config
// instead of killing the process, and stdin EOF or SIGTERM end it with
// exit status 0 after the state has been saved.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/models"
	"github.com/influxdata/telegraf/plugins/common/shim"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/probe"
)

// Set with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without os.Exit. The shim itself always talks to the
// process's stdin and stdout.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("service_latency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "path to the plugin's config file (one [[inputs.service_latency]] table)")
	pollInterval := fs.Duration("poll_interval", time.Second, "how often to gather when not driven by stdin")
	pollDisabled := fs.Bool("poll_interval_disabled", false, "gather only when a newline arrives on stdin (use with execd signal = \"STDIN\")")
	once := fs.Bool("once", false, "gather once, print line protocol to stdout and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	debugLog := fs.Bool("debug", false, "log debug messages")
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

	if *configFile == "" {
		log.Errorf("no config file: run with -config /path/to/service_latency.conf")
		return 2
	}
	probe.UserAgent = "service_latency/" + version
	service_latency.Version, service_latency.Commit = version, buildCommit()
	plugin, err := service_latency.LoadConfigFile(*configFile)
	if err != nil {
		log.Errorf("config: %v", err)
		return 1
	}
	models.SetLoggerOnPlugin(plugin, log)

	if *once {
		return gatherOnce(plugin, stdout, log)
	}

	// SIGHUP re-reads the config; Go's default for it would kill us and
	// execd would restart us 10 s later with all state gone.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			reload(plugin, *configFile, log)
		}
	}()

	s := shim.New()
	// Not s.AddInput: it would replace our logger with the shim's and run
	// Init a second time. Init has run in LoadConfigFile.
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

// reload re-reads the config file; a valid one replaces the running
// config (the state of every service whose name remains is kept), an
// invalid one is refused and the old config keeps running.
func reload(plugin *service_latency.ServiceLatency, path string, log telegraf.Logger) {
	next, err := service_latency.LoadConfigFile(path)
	if err != nil {
		log.Errorf("SIGHUP: config not reloaded, the previous one keeps running: %v", err)
		return
	}
	models.SetLoggerOnPlugin(next, log)
	if err := plugin.Reconfigure(next); err != nil {
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
