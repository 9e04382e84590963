package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/walrelay/walrelay/internal/testenv"
)

// clearWalrelayEnv unsets every WALRELAY_* variable for the test, so the
// developer's settings do not leak into in-process commands.
func clearWalrelayEnv(t *testing.T) {
	t.Helper()

	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) {
			t.Setenv(name, "") // restores the value after the test
			os.Unsetenv(name)
		}
	}
}

// writeConfig writes a config file into a temporary directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()

	path := filepath.Join(t.TempDir(), "walrelay.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// resolveRunFlags runs `walrelay run args...` in-process with run's action
// replaced, and returns the final value of every flag of run.
func resolveRunFlags(t *testing.T, args ...string) (map[string]string, error) {
	t.Helper()

	root := newRootCommand()
	run, _, err := root.Find([]string{"run"})
	if err != nil {
		t.Fatalf("find run: %v", err)
	}

	values := make(map[string]string)
	run.RunE = func(cmd *cobra.Command, _ []string) error {
		cmd.Flags().VisitAll(func(f *pflag.Flag) { values[f.Name] = f.Value.String() })
		return nil
	}

	root.SetArgs(append([]string{"run"}, args...))
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	err = root.ExecuteContext(context.Background())
	return values, err
}

func TestConfigPrecedence(t *testing.T) {
	clearWalrelayEnv(t)
	path := writeConfig(t, `
# every source sets some of these keys
slot: from_file
exchange: file_exchange
max-in-flight: 11
status-interval: 3s
log-level: warn
amqp-url:
  - amqp://file-a/
  - amqp://file-b/
json: true             # a key of status: run ignores it
drop-publication: true # a key of teardown
`)
	t.Setenv("WALRELAY_EXCHANGE", "env_exchange")
	t.Setenv("WALRELAY_MAX_IN_FLIGHT", "22")
	t.Setenv("WALRELAY_AMQP_URL", "amqp://env/")

	got, err := resolveRunFlags(t, "--config", path, "--exchange", "flag_exchange")
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	want := map[string]string{
		"exchange":         "flag_exchange", // flag over environment and file
		"max-in-flight":    "22",            // environment over file
		"amqp-url":         "[amqp://env/]", // environment replaces the file's list
		"slot":             "from_file",     // file over default
		"status-interval":  "3s",
		"log-level":        "warn", // a flag of the root command
		"shutdown-timeout": "30s",  // default
		"publication":      "walrelay",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %q, want %q", name, got[name], w)
		}
	}
}

func TestConfigFileFromEnvironment(t *testing.T) {
	clearWalrelayEnv(t)
	path := writeConfig(t, "slot: env_named_file\namqp-url: [amqp://x/, amqp://y/]\n")
	t.Setenv("WALRELAY_CONFIG", path)

	got, err := resolveRunFlags(t)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got["slot"] != "env_named_file" {
		t.Errorf("slot = %q, want the value from the file that WALRELAY_CONFIG names", got["slot"])
	}
	if got["amqp-url"] != "[amqp://x/,amqp://y/]" {
		t.Errorf("amqp-url = %q, want both URLs of the file's list", got["amqp-url"])
	}
}

func TestConfigDefaultsWithoutSources(t *testing.T) {
	clearWalrelayEnv(t)

	got, err := resolveRunFlags(t)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	want := map[string]string{"slot": "walrelay", "max-in-flight": "1000", "log-format": "auto", "http-addr": defaultHTTPAddr}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %q, want the default %q", name, got[name], w)
		}
	}
}

// TestConfigReachesCommand runs the binary: status reports the slot that
// the file, the environment or the flag names, in that rising order.
func TestConfigReachesCommand(t *testing.T) {
	pgURL := testenv.Database(t)
	path := writeConfig(t, "pg-url: "+pgURL+"\nslot: file_slot\n")

	cases := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"file", nil, nil, "file_slot"},
		{"environment over file", []string{"WALRELAY_SLOT=env_slot"}, nil, "env_slot"},
		{"flag over environment", []string{"WALRELAY_SLOT=env_slot"}, []string{"--slot", "flag_slot"}, "flag_slot"},
	}
	for _, c := range cases {
		args := append([]string{"status", "--json", "--config", path}, c.args...)
		res := runWalrelay(t, 30*time.Second, c.env, args...)
		if res.exitCode != 0 {
			t.Fatalf("%s: status exited %d: %s", c.name, res.exitCode, res.stderr)
		}
		if !strings.Contains(res.stdout, `"name": "`+c.want+`"`) {
			t.Errorf("%s: status reports another slot than %s:\n%s", c.name, c.want, res.stdout)
		}
	}
}

func TestInvalidSettingsRejected(t *testing.T) {
	badFile := writeConfig(t, "slot: ok\nstatus-interval: soon\n")
	unknownKey := writeConfig(t, "max-inflight: 5\n")
	listForScalar := writeConfig(t, "slot: [a, b]\n")
	noValue := writeConfig(t, "slot:\n")
	notMapping := writeConfig(t, "- slot\n")

	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"env duration", []string{"WALRELAY_STATUS_INTERVAL=abc"}, nil,
			[]string{`WALRELAY_STATUS_INTERVAL="abc"`, "want a duration"}},
		{"env range", []string{"WALRELAY_MAX_IN_FLIGHT=0"}, nil,
			[]string{`WALRELAY_MAX_IN_FLIGHT="0"`, "from 1 to 1000000"}},
		{"env bool", []string{"WALRELAY_CREATE=maybe"}, nil,
			[]string{`WALRELAY_CREATE="maybe"`, "true or false"}},
		{"env choice", []string{"WALRELAY_LOG_FORMAT=xml"}, nil,
			[]string{`WALRELAY_LOG_FORMAT="xml"`, "auto, json or console"}},
		{"flag duration", nil, []string{"--status-interval", "abc"},
			[]string{`--status-interval "abc"`, "want a duration"}},
		{"flag range", nil, []string{"--status-interval", "5ms"},
			[]string{`--status-interval "5ms"`, "from 100ms to 10m0s"}},
		{"flag address", nil, []string{"--http-addr", "localhost"},
			[]string{`--http-addr "localhost"`, "host:port"}},
		{"file value", nil, []string{"--config", badFile},
			[]string{`status-interval "soon" in ` + badFile + " line 2", "want a duration"}},
		{"file range from env file", []string{"WALRELAY_CONFIG=" + writeConfig(t, "max-in-flight: 2000000\n")}, nil,
			[]string{`max-in-flight "2000000"`, "line 1", "from 1 to 1000000"}},
		{"file unknown key", nil, []string{"--config", unknownKey},
			[]string{`unknown key "max-inflight"`, unknownKey, "line 1"}},
		{"file list for a single value", nil, []string{"--config", listForScalar},
			[]string{`slot "a,b"`, "a list is not allowed"}},
		{"file key without value", nil, []string{"--config", noValue},
			[]string{"slot has no value", "line 1"}},
		{"file not a mapping", nil, []string{"--config", notMapping},
			[]string{"want a mapping of flag names"}},
		{"file missing", nil, []string{"--config", "/nonexistent/walrelay.yaml"},
			[]string{"read config file", "/nonexistent/walrelay.yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := runWalrelay(t, 30*time.Second, c.env, append([]string{"run"}, c.args...)...)
			checkOneErrorLine(t, res, c.want...)
		})
	}
}
