package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Certificates are PEM files of a test CA and of a server and a client
// certificate it signed, in a temporary folder.
type Certificates struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPool *x509.CertPool
}

// NewCertificates writes a CA, a server certificate for localhost and
// 127.0.0.1, and a client certificate with common name clientName.
func NewCertificates(t testing.TB, clientName string) *Certificates {
	t.Helper()

	dir := t.TempDir()
	c := &Certificates{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}

	caKey := newKey(t)
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "walrelay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	c.ca, err = x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	c.caKey = caKey
	c.caPool = x509.NewCertPool()
	c.caPool.AddCert(c.ca)
	writePEM(t, c.CA, "CERTIFICATE", caDER)

	c.issue(t, 2, "localhost", x509.ExtKeyUsageServerAuth, c.ServerCert, c.ServerKey)
	c.issue(t, 3, clientName, x509.ExtKeyUsageClientAuth, c.ClientCert, c.ClientKey)

	return c
}

func (c *Certificates) issue(t testing.TB, serial int64, name string, usage x509.ExtKeyUsage, certFile, keyFile string) {
	t.Helper()

	key := newKey(t)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, certFile, "CERTIFICATE", der)

	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TLSTerminator accepts TLS connections that present a client certificate
// signed by the test CA and forwards their plain bytes to upstream, as a
// TLS listener in front of a local server would.
type TLSTerminator struct {
	Addr string // 127.0.0.1:port

	// Verified counts connections whose client certificate was verified.
	Verified atomic.Int64

	mu          sync.Mutex
	clientNames []string // common names of the verified client certificates
}

// NewTLSTerminator starts a terminator for upstream; cleanup stops it.
func NewTLSTerminator(t testing.TB, certs *Certificates, upstream string) *TLSTerminator {
	t.Helper()

	cert, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    certs.caPool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}

	listener, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	term := &TLSTerminator{Addr: listener.Addr().String()}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				term.forward(conn.(*tls.Conn), upstream)
			}()
		}
	}()
	t.Cleanup(func() {
		listener.Close()
		wg.Wait()
	})

	return term
}

// ClientNames returns the common names of the verified client certificates.
func (term *TLSTerminator) ClientNames() []string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return append([]string(nil), term.clientNames...)
}

func (term *TLSTerminator) forward(conn *tls.Conn, upstream string) {
	defer conn.Close()

	if err := conn.Handshake(); err != nil {
		return
	}
	state := conn.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return
	}
	term.Verified.Add(1)
	term.mu.Lock()
	term.clientNames = append(term.clientNames, state.PeerCertificates[0].Subject.CommonName)
	term.mu.Unlock()

	up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()

	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, conn); up.Close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, up); conn.Close(); done <- struct{}{} }()
	<-done
	<-done
}
