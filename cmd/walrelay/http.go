package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/metrics"
	"github.com/walrelay/walrelay/relay"
)

// defaultHTTPAddr serves metrics and health checks on the loopback
// interface only; expose them with --http-addr :9188 where Prometheus or
// an orchestrator scrapes from another host.
const defaultHTTPAddr = "127.0.0.1:9188"

// httpStopTimeout bounds the wait for running scrapes when walrelay stops.
const httpStopTimeout = 5 * time.Second

// addHTTPFlag adds --http-addr.
func addHTTPFlag(cmd *cobra.Command, addr *string) {
	cmd.Flags().StringVar(addr, "http-addr", defaultHTTPAddr,
		"host:port of the HTTP server for /metrics, /healthz and /readyz; empty disables it")
}

// startHTTP serves metrics and health checks on addr and returns the
// observer to put in relay.Config and a function that stops the server.
// When ctx is canceled (SIGTERM), /readyz fails at once while the relay
// drains. An empty addr disables the server: the observer is then nil,
// which the relay treats as none. A bind failure is returned.
func startHTTP(ctx context.Context, addr string, log zerolog.Logger) (relay.Observer, func(), error) {
	if addr == "" {
		log.Info().Msg("metrics and health checks disabled: --http-addr is empty")
		return nil, func() {}, nil
	}

	m := metrics.New(metrics.Config{Version: buildVersion()})
	srv, err := metrics.Listen(addr, m, log)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: set --http-addr to a free host:port, or to an empty value to disable the server", err)
	}
	stopDraining := context.AfterFunc(ctx, m.Draining)

	stop := func() {
		stopDraining()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpStopTimeout)
		defer cancel()
		if err := srv.Close(stopCtx); err != nil {
			log.Warn().Err(err).Msg("metrics and health server did not stop cleanly")
		}
	}

	return m, stop, nil
}

// probeTimeout bounds one health probe, well inside a container runtime's
// usual health check timeout.
const probeTimeout = 3 * time.Second

func newHealthcheckCommand() *cobra.Command {
	var (
		addr  string
		ready bool
	)

	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Probe the local walrelay run's /healthz (or /readyz) and exit 0 only on 200",
		Long: "healthcheck sends one GET to /healthz, or with --ready to /readyz, of the walrelay run\n" +
			"listening on --http-addr, prints the response and exits 0 on 200 and 1 otherwise. It is for\n" +
			"container health checks on images without curl. It reads the same WALRELAY_HTTP_ADDR as run;\n" +
			"a wildcard host (:9188, 0.0.0.0) is probed on the loopback address.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			url, err := probeURL(addr, path)
			if err != nil {
				return err
			}

			ctx, cancel := context.WithTimeout(cmd.Context(), probeTimeout)
			defer cancel()

			return probe(ctx, url, cmd.OutOrStdout())
		},
	}

	addHTTPFlag(cmd, &addr)
	cmd.Flags().BoolVar(&ready, "ready", false, "probe /readyz (streaming, broker not blocked) instead of /healthz")

	return cmd
}

// probeURL returns the URL of path on the server at addr, with a wildcard
// host replaced by the loopback address.
func probeURL(addr, path string) (string, error) {
	if addr == "" {
		return "", fmt.Errorf("--http-addr is empty, so walrelay run serves no health checks to probe")
	}

	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("invalid --http-addr %q: want host:port: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}

	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// probe GETs url and prints the body; a status other than 200 is an error
// that carries the body's reason.
func probe(ctx context.Context, url string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("probe %s: read the response: %w", url, err)
	}
	reason := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s returned %d: %s", url, resp.StatusCode, reason)
	}

	fmt.Fprintln(out, reason)
	return nil
}
