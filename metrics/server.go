package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Timeouts of the HTTP server. Scrapes and probes are small requests, so
// the limits are short and protect the relay from idle or slow clients.
const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
)

// Handler returns the HTTP handler of /metrics, /healthz and /readyz.
// /healthz and /readyz return 200 or 503 with a one-line plain-text reason.
func (m *Metrics) Handler(log zerolog.Logger) http.Handler {
	return newHandler(m, log)
}

// Checks is the content the HTTP server serves: a registry and the
// liveness and readiness checks. *Metrics (the relay) and *Inbox (the
// consumer) implement it.
type Checks interface {
	Registry() *prometheus.Registry
	Live() (ok bool, reason string)
	Ready() (ok bool, reason string)
}

func newHandler(m Checks, log zerolog.Logger) http.Handler {
	mux := http.NewServeMux()

	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{
		ErrorLog:            promErrorLog{log: log},
		Registry:            m.Registry(),
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeCheck(w, m.Live)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		writeCheck(w, m.Ready)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "walrelay: /metrics (Prometheus), /healthz (liveness), /readyz (readiness)")
	})

	return mux
}

func writeCheck(w http.ResponseWriter, check func() (bool, string)) {
	ok, reason := check()

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, reason)
}

// promErrorLog passes promhttp's errors to zerolog.
type promErrorLog struct {
	log zerolog.Logger
}

func (l promErrorLog) Println(v ...any) {
	l.log.Error().Str("component", "metrics").Msg(fmt.Sprint(v...))
}

// Server is a running HTTP server for one Metrics.
type Server struct {
	http     *http.Server
	listener net.Listener
	done     chan struct{}
	log      zerolog.Logger
}

// Listen binds addr (host:port) and serves m's handler on it in a new
// goroutine. It fails at once when addr is invalid or in use. A serve error
// after that is logged and ends the server, not the relay.
func Listen(addr string, m Checks, log zerolog.Logger) (*Server, error) {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %q for metrics and health checks: %w", addr, err)
	}

	log = log.With().Str("component", "http").Str("addr", listener.Addr().String()).Logger()
	s := &Server{
		http: &http.Server{
			Handler:           newHandler(m, log),
			ReadHeaderTimeout: readHeaderTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
		},
		listener: listener,
		done:     make(chan struct{}),
		log:      log,
	}

	go func() {
		defer close(s.done)
		if err := s.http.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics and health server stopped")
		}
	}()
	log.Info().Msg("serving /metrics, /healthz and /readyz")

	return s, nil
}

// Addr returns the address the server listens on, with the port chosen
// when addr asked for port 0.
func (s *Server) Addr() net.Addr {
	return s.listener.Addr()
}

// Close stops accepting requests, waits for running ones until ctx ends,
// then closes their connections. It returns when the serving goroutine has
// exited.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.http.Close())
	}
	<-s.done

	if err != nil {
		return fmt.Errorf("stop the metrics and health server: %w", err)
	}
	return nil
}
