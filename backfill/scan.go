package backfill

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/walrelay/walrelay/outbox"
)

// Columns names the outbox table's columns. ID, AggregateType,
// AggregateID, EventType and Payload are required; an empty optional
// column means the table has none.
type Columns struct {
	ID, AggregateType, AggregateID, EventType, Payload string
	Metadata, CreatedAt, ScheduledAt, Status           string
}

// Filter selects rows. Its zero value selects every row.
type Filter struct {
	// Statuses keeps rows whose status column has one of these values;
	// empty keeps every row. It needs the Status column.
	Statuses []string

	// Since and Until keep rows created in [Since, Until]; a zero bound is
	// open. They need the CreatedAt column.
	Since, Until time.Time

	// AggregateType and EventType keep rows with these values when set.
	AggregateType, EventType string

	// After resumes a scan strictly after this row; the zero Key starts at
	// the beginning.
	After Key
}

// Key is a row's position in the scan order.
type Key struct {
	CreatedAt time.Time
	ID        string
}

// Row is one outbox row as a message, with its position.
type Row struct {
	Message outbox.Message
	Key     Key
}

// Querier is the part of a pgx connection or transaction that Scan uses.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Scan calls fn for every row of table (a quoted, schema-qualified name)
// that filter selects, in (created_at, id) order, and stops at the first
// error fn returns. Rows stream from one query, so memory does not grow
// with the table.
func Scan(ctx context.Context, db Querier, table string, cols Columns, filter Filter, fn func(Row) error) error {
	query, args, err := buildQuery(table, cols, filter, false)
	if err != nil {
		return err
	}

	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("read outbox rows of %s: %w", table, err)
	}
	defer rows.Close()

	for rows.Next() {
		var (
			row                  Row
			metadata             *string
			payload              string
			createdAt, scheduled *time.Time
		)
		if err := rows.Scan(&row.Message.ID, &row.Message.AggregateType, &row.Message.AggregateID,
			&row.Message.EventType, &payload, &metadata, &createdAt, &scheduled); err != nil {
			return fmt.Errorf("read outbox rows of %s: %w", table, err)
		}

		row.Message.Payload = []byte(payload)
		if metadata != nil {
			row.Message.Metadata = []byte(*metadata)
		}
		if createdAt != nil {
			row.Message.CreatedAt = createdAt.UTC()
		}
		if scheduled != nil {
			row.Message.ScheduledAt = scheduled.UTC()
		}
		row.Key = Key{CreatedAt: row.Message.CreatedAt, ID: row.Message.ID}

		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read outbox rows of %s: %w", table, err)
	}

	return nil
}

// Count returns how many rows filter selects.
func Count(ctx context.Context, db Querier, table string, cols Columns, filter Filter) (int64, error) {
	query, args, err := buildQuery(table, cols, filter, true)
	if err != nil {
		return 0, err
	}

	var n int64
	if err := db.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count outbox rows of %s: %w", table, err)
	}

	return n, nil
}

// buildQuery returns the SELECT (or SELECT count) for filter.
func buildQuery(table string, cols Columns, filter Filter, count bool) (string, []any, error) {
	q := func(name string) string { return pgx.Identifier{name}.Sanitize() }
	orNull := func(name, cast string) string {
		if name == "" {
			return "NULL::" + cast
		}
		return q(name) + "::" + cast
	}

	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}

	if len(filter.Statuses) > 0 {
		if cols.Status == "" {
			return "", nil, fmt.Errorf("table %s has no status column, so rows cannot be selected by status; use the backfill mode all", table)
		}
		where = append(where, q(cols.Status)+"::text = ANY("+arg(filter.Statuses)+"::text[])")
	}

	if !filter.Since.IsZero() || !filter.Until.IsZero() || !filter.After.CreatedAt.IsZero() {
		if cols.CreatedAt == "" {
			return "", nil, fmt.Errorf("table %s has no creation time column, so rows cannot be selected by time", table)
		}
	}
	if !filter.Since.IsZero() {
		where = append(where, q(cols.CreatedAt)+" >= "+arg(filter.Since))
	}
	if !filter.Until.IsZero() {
		where = append(where, q(cols.CreatedAt)+" <= "+arg(filter.Until))
	}
	if filter.AggregateType != "" {
		where = append(where, q(cols.AggregateType)+"::text = "+arg(filter.AggregateType))
	}
	if filter.EventType != "" {
		where = append(where, q(cols.EventType)+"::text = "+arg(filter.EventType))
	}

	orderBy := q(cols.ID) + "::text"
	if cols.CreatedAt != "" {
		orderBy = q(cols.CreatedAt) + ", " + orderBy
		if filter.After != (Key{}) {
			where = append(where, "("+q(cols.CreatedAt)+", "+q(cols.ID)+"::text) > ("+arg(filter.After.CreatedAt)+", "+arg(filter.After.ID)+")")
		}
	} else if filter.After.ID != "" {
		where = append(where, q(cols.ID)+"::text > "+arg(filter.After.ID))
	}

	whereSQL := ""
	if len(where) > 0 {
		whereSQL = " WHERE " + strings.Join(where, " AND ")
	}

	if count {
		return "SELECT count(*) FROM " + table + whereSQL, args, nil
	}

	createdAt := "NULL::timestamptz"
	if cols.CreatedAt != "" {
		createdAt = q(cols.CreatedAt) + "::timestamptz"
	}
	scheduledAt := "NULL::timestamptz"
	if cols.ScheduledAt != "" {
		scheduledAt = q(cols.ScheduledAt) + "::timestamptz"
	}

	sql := "SELECT " + strings.Join([]string{
		q(cols.ID) + "::text",
		q(cols.AggregateType) + "::text",
		q(cols.AggregateID) + "::text",
		q(cols.EventType) + "::text",
		q(cols.Payload) + "::text",
		orNull(cols.Metadata, "text"),
		createdAt,
		scheduledAt,
	}, ", ") + " FROM " + table + whereSQL + " ORDER BY " + orderBy

	return sql, args, nil
}
