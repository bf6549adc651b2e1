// Package testpeer starts misbehaving loopback peers for tests: a raw TCP
// server whose every connection is handed to a function, and a listener
// that closes every connection at once. Shared by the probe tests and the
// plugin's hostile-peer and leak tests.
package testpeer

import (
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Serve serves every TCP connection on 127.0.0.1 with handle and returns
// the address. done is closed at cleanup, when every handler must return
// (their connections are closed for them); cleanup waits for them.
func Serve(t testing.TB, handle func(c net.Conn, done <-chan struct{})) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, done)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
