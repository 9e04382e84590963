package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/walrelay/walrelay/internal/testenv"
)

// binary is the walrelay binary built once for the tests of this package.
var binary string

func TestMain(m *testing.M) {
	built, remove, err := testenv.BuildWalrelay(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = built

	code := m.Run()
	remove()
	os.Exit(code)
}

// result is the outcome of one finished walrelay process.
type result struct {
	exitCode int
	stdout   string
	stderr   string
}

// runWalrelay runs the binary to completion with args and the environment
// env added, failing the test after timeout.
func runWalrelay(t *testing.T, timeout time.Duration, env []string, args ...string) result {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr

	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("walrelay %s did not finish within %s; stderr:\n%s", strings.Join(args, " "), timeout, stderr.String())
	}

	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("run walrelay: %v", err)
	}

	return result{exitCode: code, stdout: stdout.String(), stderr: stderr.String()}
}

// cleanEnv returns the environment without WALRELAY_* and PG* variables,
// so the developer's settings do not leak into the tests.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WALRELAY_") || strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// cleanEnvHook returns the environment of background processes; tests
// replace it to add variables.
var cleanEnvHook = cleanEnv

// background is a walrelay process running in the background.
type background struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

// startWalrelay starts the binary in the background; cleanup kills it if
// it is still running.
func startWalrelay(t *testing.T, args ...string) *background {
	t.Helper()

	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnvHook()
	b := &background{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = b.stderr

	if err := cmd.Start(); err != nil {
		t.Fatalf("start walrelay: %v", err)
	}
	go func() { b.done <- cmd.Wait() }()

	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-b.done
		}
	})

	return b
}

// stop sends SIGTERM and returns the exit code.
func (b *background) stop(t *testing.T, timeout time.Duration) int {
	t.Helper()

	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal walrelay: %v", err)
	}

	select {
	case err := <-b.done:
		b.done <- err
		if exitErr, ok := err.(*exec.ExitError); ok {
			return exitErr.ExitCode()
		}
		if err != nil {
			t.Fatalf("wait for walrelay: %v", err)
		}
		return 0
	case <-time.After(timeout):
		t.Fatalf("walrelay did not exit within %s of SIGTERM; stderr:\n%s", timeout, b.stderr.String())
		return -1
	}
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func (b *background) peakRSS(t *testing.T) int64 {
	t.Helper()

	f, err := os.Open(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read process status: %v", err)
	}
	defer f.Close()

	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := scanner.Text()
		if !strings.HasPrefix(line, "VmHWM:") {
			continue
		}
		fields := strings.Fields(line)
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		return kb * 1024
	}
	t.Fatal("VmHWM not found in /proc status")
	return 0
}

// waitForLog waits until the process has logged a line containing text.
func (b *background) waitForLog(t *testing.T, text string, timeout time.Duration) {
	t.Helper()

	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.stderr.String(), text) {
		select {
		case err := <-b.done:
			b.done <- err
			t.Fatalf("walrelay exited (%v) before logging %q; stderr:\n%s", err, text, b.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("walrelay did not log %q within %s; stderr:\n%s", text, timeout, b.stderr.String())
		}
	}
}
