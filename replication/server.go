package replication

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// MinServerVersion is the oldest supported PostgreSQL (server_version_num).
const MinServerVersion = 140000

// ServerInfo describes the Postgres server and role walrelay runs against.
type ServerInfo struct {
	Version    string // server_version, e.g. "15.20 (Debian ...)"
	VersionNum int    // server_version_num, e.g. 150020
	Database   string
	Role       string
}

// CheckServer verifies that the server can serve logical replication to the
// current role: version 14 or later, wal_level=logical, replication slots
// and WAL senders configured, and a role with the REPLICATION attribute. Each
// failure names the setting and the fix.
func CheckServer(ctx context.Context, db *pgx.Conn) (ServerInfo, error) {
	var (
		info       ServerInfo
		walLevel   string
		maxSlots   int
		maxSenders int
		canRepl    bool
	)

	err := db.QueryRow(ctx, `
		SELECT current_setting('server_version'),
		       current_setting('server_version_num')::int,
		       current_database(),
		       current_user,
		       current_setting('wal_level'),
		       current_setting('max_replication_slots')::int,
		       current_setting('max_wal_senders')::int,
		       (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)`,
	).Scan(&info.Version, &info.VersionNum, &info.Database, &info.Role, &walLevel, &maxSlots, &maxSenders, &canRepl)
	if err != nil {
		return ServerInfo{}, fmt.Errorf("query server settings: %w", err)
	}

	if info.VersionNum < MinServerVersion {
		return info, fmt.Errorf("PostgreSQL %s is not supported: walrelay needs PostgreSQL 14 or later", info.Version)
	}
	if walLevel != "logical" {
		return info, fmt.Errorf("wal_level is %q, but logical replication needs wal_level=logical: "+
			"run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL", walLevel)
	}
	if maxSlots < 1 {
		return info, fmt.Errorf("max_replication_slots is %d: set it to at least 1 and restart PostgreSQL", maxSlots)
	}
	if maxSenders < 1 {
		return info, fmt.Errorf("max_wal_senders is %d: set it to at least 1 and restart PostgreSQL", maxSenders)
	}
	if !canRepl {
		return info, fmt.Errorf("role %q may not start replication: run ALTER ROLE %s WITH REPLICATION", info.Role, quoteIdent(info.Role))
	}

	return info, nil
}
