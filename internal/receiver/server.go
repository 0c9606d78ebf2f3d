package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Server runs the receiver as a manager runnable on every replica, each serving the paths
// its own Receiver reconciler registered. Every request is bounded: its header, body
// (MaxBodySize, in the handler), the time to read and answer it, and idle connections.
type Server struct {
	Addr    string
	Handler http.Handler
	// Listening, when set, receives the bound address once the server listens.
	Listening func(addr string)
	// Prime, when set, runs before the server listens: it registers the Receivers, so that
	// no push after a restart is refused for want of them.
	Prime func(ctx context.Context) error

	listening atomic.Bool
}

// Ready is a readiness check: it passes once the server listens with its Receivers
// registered, so that no Service sends a push to a replica that would refuse the connection.
func (s *Server) Ready(*http.Request) error {
	if !s.listening.Load() {
		return errors.New("the webhook receiver is not listening yet")
	}
	return nil
}

// Start serves until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	if s.Prime != nil {
		if err := s.Prime(ctx); err != nil {
			return fmt.Errorf("registering the Receivers: %w", err)
		}
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return err
	}
	s.listening.Store(true)
	defer s.listening.Store(false)
	if s.Listening != nil {
		s.Listening(ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, s.Handler)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Verifying and queueing reconciles may fetch the pushed head from Git once.
		WriteTimeout:   time.Minute,
		IdleTimeout:    time.Minute,
		MaxHeaderBytes: 64 << 10,
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NeedLeaderElection says the receiver runs on every replica.
func (s *Server) NeedLeaderElection() bool { return false }
