package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// logLines decodes JSON log lines.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()

	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		lines = append(lines, fields)
	}
	return lines
}

func TestWarnLimiterDropsRepeats(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	limiter := newWarnLimiter(&out, 3, time.Minute, func() time.Time { return now })
	log := zerolog.New(limiter)

	for i := range 10 {
		log.Warn().Int("attempt", i).Msg("broker unreachable; retrying")
	}
	log.Warn().Msg("another warning")
	for range 4 {
		log.Info().Msg("info is never limited")
	}

	lines := logLines(t, out.String())
	counts := make(map[string]int)
	for _, l := range lines {
		counts[l["message"].(string)]++
	}
	if counts["broker unreachable; retrying"] != 3 {
		t.Errorf("%d repeats logged within the period, want 3", counts["broker unreachable; retrying"])
	}
	if counts["another warning"] != 1 || counts["info is never limited"] != 4 {
		t.Errorf("other lines were limited: %v", counts)
	}

	out.Reset()
	now = now.Add(61 * time.Second)
	log.Warn().Msg("broker unreachable; retrying")

	lines = logLines(t, out.String())
	if len(lines) != 2 {
		t.Fatalf("after the period: %d lines, want the summary and the warning:\n%s", len(lines), out.String())
	}
	summary := lines[0]
	if summary["repeated_message"] != "broker unreachable; retrying" || summary["suppressed"] != float64(7) {
		t.Errorf("summary line = %v, want 7 suppressed repeats of the message", summary)
	}
	if lines[1]["message"] != "broker unreachable; retrying" {
		t.Errorf("second line = %v, want the warning itself", lines[1])
	}
}

func TestLoggerRedactsURLPasswords(t *testing.T) {
	flags := pflag.NewFlagSet("test", pflag.ContinueOnError)
	flags.String("pg-url", "postgres://relay:pg%2Fsecret@127.0.0.1:5432/app", "")
	flags.StringSlice("amqp-url", []string{"amqp://relay:broker-secret@127.0.0.1:5672/", "amqp://relay:other-secret@127.0.0.1:5673/"}, "")
	flags.String("slot", "abc-secret-not", "") // not a URL: left alone

	secrets := urlSecrets(flags)
	for _, want := range []string{"pg/secret", "broker-secret", "other-secret"} {
		found := false
		for _, s := range secrets {
			found = found || s == want
		}
		if !found {
			t.Errorf("urlSecrets(%v) lacks %q", secrets, want)
		}
	}

	var out bytes.Buffer
	log, err := newLogger(&logOptions{level: "info", format: "json", secrets: secrets}, &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Warn().Str("url", "postgres://relay:pg%2Fsecret@127.0.0.1:5432/app").
		Err(errors.New(`dial "amqp://relay:broker-secret@127.0.0.1:5672/": refused`)).
		Msg("password pg/secret, other-secret and the slot abc-secret-not")

	logged := out.String()
	for _, secret := range []string{"pg/secret", "pg%2Fsecret", "broker-secret", "other-secret"} {
		if strings.Contains(logged, secret) {
			t.Errorf("log contains %q: %s", secret, logged)
		}
	}
	if !strings.Contains(logged, "abc-secret-not") || !strings.Contains(logged, "relay:xxxxx@127.0.0.1") {
		t.Errorf("log lost text that is no secret: %s", logged)
	}
}

func TestLogFormatAutoWritesJSONWhenNotATerminal(t *testing.T) {
	var out bytes.Buffer
	log, err := newLogger(&logOptions{level: "info", format: "auto"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Str("slot", "s").Msg("relay started")

	lines := logLines(t, out.String())
	if len(lines) != 1 || lines[0]["message"] != "relay started" || lines[0]["slot"] != "s" {
		t.Errorf("auto format on a buffer wrote %q, want one JSON line", out.String())
	}
}

func TestAskConfirmation(t *testing.T) {
	cases := []struct {
		name        string
		input       string
		interactive bool
		wantErr     string
	}{
		{"yes", "yes\n", true, ""},
		{"yes without newline", "yes", true, ""},
		{"no", "no\n", true, `the reply was "no"`},
		{"y is not enough", "y\n", true, `the reply was "y"`},
		{"end of input", "", true, `the reply was ""`},
		{"not a terminal", "yes\n", false, "not a terminal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var prompt bytes.Buffer
			err := askConfirmation(strings.NewReader(c.input), c.interactive, &prompt, "drop slot x")

			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, errNotConfirmed) {
				t.Fatalf("error %v, want errNotConfirmed containing %q", err, c.wantErr)
			}
			if c.interactive && !strings.Contains(prompt.String(), "drop slot x") {
				t.Errorf("prompt %q does not show the plan", prompt.String())
			}
		})
	}
}
