package migrations

import (
	"database/sql"
	"fmt"
	"net"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// openDB parses pgURL and opens a database/sql handle on the pgx driver. The
// returned target names the server and database for messages and never
// contains a password.
func openDB(pgURL string) (*sql.DB, string, error) {
	config, err := pgx.ParseConfig(pgURL)
	if err != nil {
		// pgconn's ParseConfigError masks passwords in its message. The error is
		// formatted with %v rather than wrapped, because its ConnString field
		// holds the original string with the password.
		return nil, "", fmt.Errorf("parse Postgres URL: %v; use postgres://user[:password]@host:port/database", err)
	}

	target := redactedTarget(config)
	return stdlib.OpenDB(*config), target, nil
}

// redactedTarget formats the connection as postgres://user@host:port/database,
// leaving out the password and every runtime parameter.
func redactedTarget(config *pgx.ConnConfig) string {
	hostPort := net.JoinHostPort(config.Host, strconv.Itoa(int(config.Port)))
	return fmt.Sprintf("postgres://%s@%s/%s", config.User, hostPort, config.Database)
}
