package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

// checkOneErrorLine asserts a non-zero exit and one "walrelay: ..." line on
// stderr that contains every string in want.
func checkOneErrorLine(t *testing.T, res result, want ...string) {
	t.Helper()

	if res.exitCode == 0 {
		t.Fatalf("exit code 0, want non-zero; stderr:\n%s", res.stderr)
	}

	var errorLines []string
	for _, line := range strings.Split(strings.TrimSpace(res.stderr), "\n") {
		if strings.HasPrefix(line, "walrelay: ") {
			errorLines = append(errorLines, line)
		}
	}
	if len(errorLines) != 1 {
		t.Fatalf("want one error line, got %d; stderr:\n%s", len(errorLines), res.stderr)
	}
	for _, w := range want {
		if !strings.Contains(errorLines[0], w) {
			t.Errorf("error line %q does not mention %q", errorLines[0], w)
		}
	}
}

func TestRunBadURL(t *testing.T) {
	res := runWalrelay(t, 30*time.Second, nil, "run", "--pg-url", "postgres://127.0.0.1:notaport/db")
	checkOneErrorLine(t, res, "notaport")
}

func TestRunBadSlotName(t *testing.T) {
	res := runWalrelay(t, 30*time.Second, nil, "run", "--pg-url", testenv.AdminURL(), "--slot", "Bad-Slot")
	checkOneErrorLine(t, res, `"Bad-Slot"`, "lowercase")
}

func TestRunMissingTable(t *testing.T) {
	testenv.RequireLogical(t)
	pgURL := testenv.Database(t)

	res := runWalrelay(t, 60*time.Second, nil, "run", "--pg-url", pgURL, "--table", "public.no_such_outbox",
		"--slot", testenv.Name("slot"))
	checkOneErrorLine(t, res, "public.no_such_outbox", "does not exist", "walrelay migrate")
}

func TestRunWrongWalLevel(t *testing.T) {
	url := startPrivateCluster(t, "replica", "")

	res := runWalrelay(t, 60*time.Second, nil, "run", "--pg-url", url)
	checkOneErrorLine(t, res, `wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical")
}

func TestRunWrongPassword(t *testing.T) {
	url := startPrivateCluster(t, "logical", "the-right-password")
	url = strings.Replace(url, "postgres@", "postgres:a-wrong-password@", 1)

	started := time.Now()
	res := runWalrelay(t, 60*time.Second, nil, "run", "--pg-url", url)
	checkOneErrorLine(t, res, "password authentication failed")

	if strings.Contains(res.stderr, "a-wrong-password") {
		t.Errorf("stderr contains the password:\n%s", res.stderr)
	}
	if took := time.Since(started); took > 10*time.Second {
		t.Errorf("exit took %s: a wrong password must not be retried", took)
	}
}

// startPrivateCluster starts a private PostgreSQL cluster with the given
// wal_level on a free loopback port, so the test leaves the shared server
// alone, and stops it in cleanup. With a password, the postgres role gets it
// and connections over TCP must authenticate with scram-sha-256. It needs
// root (to run the server as the postgres user) and the Debian server
// binaries.
func startPrivateCluster(t *testing.T, walLevel, password string) string {
	t.Helper()

	bin := serverBinDir(t)
	if os.Geteuid() != 0 {
		t.Skip("a private cluster needs root to run the server as the postgres user")
	}

	dir, err := os.MkdirTemp("", "walrelay-replica-cluster")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	if out, err := exec.Command("chown", "postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v: %s", dir, err, out)
	}

	asPostgres := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(bin, name)}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	}

	if password == "" {
		asPostgres("initdb", "-D", data, "-A", "trust", "-U", "postgres")
	} else {
		pwfile := filepath.Join(dir, "pwfile")
		if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		asPostgres("initdb", "-D", data, "--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres", "--pwfile", pwfile)
	}

	port := freePort(t)
	options := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c wal_level=%s", port, dir, walLevel)
	asPostgres("pg_ctl", "-D", data, "-o", options, "-w", "-l", filepath.Join(dir, "log"), "start")
	t.Cleanup(func() {
		cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("stop private cluster: %v: %s", err, out)
		}
	})

	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
}

func serverBinDir(t *testing.T) string {
	t.Helper()

	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		t.Skip("no PostgreSQL server binaries under /usr/lib/postgresql")
	}
	return filepath.Dir(matches[len(matches)-1])
}

func freePort(t *testing.T) int {
	t.Helper()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
