package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBenchSettingsRejected checks that bench rejects a 0, which its Go
// configuration would read as the default, and an even number of rounds,
// before it creates anything: on the servers or the profile file.
func TestBenchSettingsRejected(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "cpu.out")

	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"zero rounds", nil, []string{"--rounds", "0"}, []string{`--rounds "0"`, "odd number from 1 to 99"}},
		{"even rounds", nil, []string{"--rounds", "2"}, []string{`--rounds "2"`, "odd number"}},
		{"even rounds from env", []string{"WALRELAY_ROUNDS=4"}, nil, []string{`WALRELAY_ROUNDS="4"`, "odd number"}},
		{"zero rows", nil, []string{"--rows", "0"}, []string{`--rows "0"`, "from 1 to 10000000"}},
		{"zero duration", nil, []string{"--duration", "0s"}, []string{`--duration "0s"`, "from 100ms"}},
		{"zero connections", nil, []string{"--connections", "0"}, []string{`--connections "0"`, "from 1 to 64"}},
		{"empty scenarios", nil, []string{"--scenarios", ""}, []string{`--scenarios ""`, "one or more of ceiling,backlog"}},
		{"unknown scenario", nil, []string{"--scenarios", "ceiling,bogus"}, []string{`--scenarios "ceiling,bogus"`, "one or more of"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"bench", "--cpu-profile", profile}, c.args...)
			res := runWalrelay(t, 30*time.Second, c.env, args...)
			checkOneErrorLine(t, res, c.want...)

			if _, err := os.Stat(profile); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("profile file %s exists after a rejected setting (stat: %v), want none", profile, err)
			}
		})
	}
}
