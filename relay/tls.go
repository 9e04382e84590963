package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// brokerTLS builds the TLS configuration for amqps:// URLs from the
// configured PEM files, or returns nil when none is set.
func brokerTLS(cfg Config) (*tls.Config, error) {
	if cfg.AMQPCACert == "" && cfg.AMQPClientCert == "" {
		return nil, nil
	}

	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}

	if cfg.AMQPCACert != "" {
		pem, err := os.ReadFile(cfg.AMQPCACert)
		if err != nil {
			return nil, fmt.Errorf("read broker CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker CA certificate %s contains no PEM certificate", cfg.AMQPCACert)
		}
		tlsCfg.RootCAs = pool
	}

	if cfg.AMQPClientCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.AMQPClientCert, cfg.AMQPClientKey)
		if err != nil {
			return nil, fmt.Errorf("load broker client certificate %s and key %s: %w", cfg.AMQPClientCert, cfg.AMQPClientKey, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}

	return tlsCfg, nil
}
