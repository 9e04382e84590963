package replication

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PublicationResult is the outcome of EnsurePublication.
type PublicationResult struct {
	Created bool
}

// EnsurePublication makes sure that publication publishes the inserts of
// table. A missing publication is created as FOR TABLE table WITH (publish =
// 'insert') when create is true. An existing one is checked, and when it
// does not publish the table's inserts the error names the SQL that fixes it.
func EnsurePublication(ctx context.Context, db *pgx.Conn, publication string, table Table, create bool) (PublicationResult, error) {
	if err := checkTableExists(ctx, db, table); err != nil {
		return PublicationResult{}, err
	}

	var pubInsert bool
	err := db.QueryRow(ctx, `SELECT pubinsert FROM pg_publication WHERE pubname = $1`, publication).Scan(&pubInsert)
	if errors.Is(err, pgx.ErrNoRows) {
		if !create {
			return PublicationResult{}, fmt.Errorf("publication %q does not exist and creating it is disabled: "+
				"run walrelay setup, or CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')",
				publication, quoteIdent(publication), table.Quoted())
		}
		return createPublication(ctx, db, publication, table)
	}
	if err != nil {
		return PublicationResult{}, fmt.Errorf("look up publication %q: %w", publication, err)
	}

	if !pubInsert {
		return PublicationResult{}, fmt.Errorf("publication %q does not publish inserts: "+
			"run ALTER PUBLICATION %s SET (publish = 'insert')", publication, quoteIdent(publication))
	}

	var included bool
	err = db.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_publication_tables
		               WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`,
		publication, table.Schema, table.Name,
	).Scan(&included)
	if err != nil {
		return PublicationResult{}, fmt.Errorf("look up the tables of publication %q: %w", publication, err)
	}
	if !included {
		return PublicationResult{}, fmt.Errorf("publication %q does not include table %s: "+
			"run ALTER PUBLICATION %s ADD TABLE %s", publication, table, quoteIdent(publication), table.Quoted())
	}

	return PublicationResult{}, nil
}

// PublicationTables returns the tables that publication publishes, as
// schema.table, or an empty list when it does not exist.
func PublicationTables(ctx context.Context, db *pgx.Conn, publication string) ([]string, error) {
	rows, err := db.Query(ctx, `
		SELECT schemaname || '.' || tablename FROM pg_publication_tables
		WHERE pubname = $1 ORDER BY 1`, publication)
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %q: %w", publication, err)
	}

	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the tables of publication %q: %w", publication, err)
	}

	return tables, nil
}

func checkTableExists(ctx context.Context, db *pgx.Conn, table Table) error {
	var exists bool
	err := db.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))`,
		table.Schema, table.Name,
	).Scan(&exists)
	if err != nil {
		return fmt.Errorf("look up table %s: %w", table, err)
	}
	if !exists {
		return fmt.Errorf("table %s does not exist in database %q: run walrelay migrate to create the Event-Forge tables, "+
			"or set --table to your outbox table", table, db.Config().Database)
	}

	return nil
}

func createPublication(ctx context.Context, db *pgx.Conn, publication string, table Table) (PublicationResult, error) {
	sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')", quoteIdent(publication), table.Quoted())

	_, err := db.Exec(ctx, sql)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" {
		// Another walrelay created it between the lookup and here: check it.
		return EnsurePublication(ctx, db, publication, table, false)
	}
	if err != nil {
		return PublicationResult{}, fmt.Errorf("create publication %q for table %s: %w", publication, table, err)
	}

	return PublicationResult{Created: true}, nil
}

// DropPublication drops publication if it exists.
func DropPublication(ctx context.Context, db *pgx.Conn, publication string) error {
	if _, err := db.Exec(ctx, "DROP PUBLICATION IF EXISTS "+quoteIdent(publication)); err != nil {
		return fmt.Errorf("drop publication %q: %w", publication, err)
	}

	return nil
}
