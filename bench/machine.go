package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// postgresSettings are the server settings that change the figures most.
var postgresSettings = []string{
	"wal_level", "synchronous_commit", "fsync", "shared_buffers", "max_wal_size",
	"logical_decoding_work_mem", "wal_sender_timeout",
}

// describeMachine reports this machine and the servers' versions. A value
// it cannot read is left empty; the run goes on.
func describeMachine(ctx context.Context, e *env) Machine {
	m := Machine{
		CPUs:             runtime.NumCPU(),
		GoVersion:        runtime.Version(),
		PostgresSettings: map[string]string{},
	}

	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPUModel = strings.TrimSpace(value)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				m.MemoryBytes = kb * 1024
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if fields := strings.Fields(string(data)); len(fields) > 0 {
			m.LoadAverage, _ = strconv.ParseFloat(fields[0], 64)
		}
	}

	if err := e.db.QueryRow(ctx, "SELECT version()").Scan(&m.PostgresVersion); err != nil {
		e.log.Debug().Err(err).Msg("cannot read the Postgres version")
	}
	for _, name := range postgresSettings {
		var value string
		if err := e.db.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&value); err == nil {
			m.PostgresSettings[name] = value
		}
	}

	if v, ok := e.amqp.Properties["version"]; ok {
		m.RabbitMQVersion = fmt.Sprint(v)
	}
	if p, ok := e.amqp.Properties["product"]; ok {
		m.RabbitMQVersion = strings.TrimSpace(fmt.Sprint(p) + " " + m.RabbitMQVersion)
	}
	return m
}
