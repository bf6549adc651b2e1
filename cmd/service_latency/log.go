package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/influxdata/telegraf"
)

// levelLogger writes one line per message, "<indicator> msg", with no
// timestamp: Telegraf's inputs.execd reads the E!/W!/I!/D! prefix from our
// stderr and logs the line at that level (it adds its own timestamp).
// Nothing is kept in memory. Messages below the level are dropped before
// they are formatted.
type levelLogger struct {
	mu    sync.Mutex
	w     io.Writer
	level telegraf.LogLevel
	attrs string
}

func newLevelLogger(w io.Writer, level telegraf.LogLevel) *levelLogger {
	return &levelLogger{w: w, level: level}
}

func (l *levelLogger) Level() telegraf.LogLevel { return l.level }

func (l *levelLogger) AddAttribute(key string, value interface{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attrs += fmt.Sprintf("%s=%v ", key, value)
}

func (l *levelLogger) print(level telegraf.LogLevel, msg string) {
	if !l.level.Includes(level) {
		return
	}
	// one message, one line: execd reads stderr line by line
	msg = strings.ReplaceAll(strings.TrimRight(msg, "\n"), "\n", " | ")
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s\n", cutLine(level.Indicator()+" "+l.attrs+msg))
}

func (l *levelLogger) Errorf(format string, args ...interface{}) {
	if l.level.Includes(telegraf.Error) {
		l.print(telegraf.Error, fmt.Sprintf(format, args...))
	}
}
func (l *levelLogger) Error(args ...interface{}) { l.print(telegraf.Error, fmt.Sprint(args...)) }
func (l *levelLogger) Warnf(format string, args ...interface{}) {
	if l.level.Includes(telegraf.Warn) {
		l.print(telegraf.Warn, fmt.Sprintf(format, args...))
	}
}
func (l *levelLogger) Warn(args ...interface{}) { l.print(telegraf.Warn, fmt.Sprint(args...)) }
func (l *levelLogger) Infof(format string, args ...interface{}) {
	if l.level.Includes(telegraf.Info) {
		l.print(telegraf.Info, fmt.Sprintf(format, args...))
	}
}
func (l *levelLogger) Info(args ...interface{}) { l.print(telegraf.Info, fmt.Sprint(args...)) }
func (l *levelLogger) Debugf(format string, args ...interface{}) {
	if l.level.Includes(telegraf.Debug) {
		l.print(telegraf.Debug, fmt.Sprintf(format, args...))
	}
}
func (l *levelLogger) Debug(args ...interface{}) { l.print(telegraf.Debug, fmt.Sprint(args...)) }
func (l *levelLogger) Tracef(format string, args ...interface{}) {
	if l.level.Includes(telegraf.Trace) {
		l.print(telegraf.Trace, fmt.Sprintf(format, args...))
	}
}
func (l *levelLogger) Trace(args ...interface{}) { l.print(telegraf.Trace, fmt.Sprint(args...)) }
