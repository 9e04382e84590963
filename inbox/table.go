package inbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// DefaultTable is the inbox table Event-Forge's libraries and
// `walrelay migrate` create.
const DefaultTable = "public.inbox_messages"

// querier is the query access loadTable needs, from a pool or a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// column is one column of the inbox table, from information_schema.columns.
type column struct {
	name       string
	dataType   string
	nullable   bool
	hasDefault bool
	// maxLength is the character limit of a varchar or char column, or 0
	// for none.
	maxLength int
}

// table is the inbox table as found at start: which of the columns that
// walrelay writes it has, and the statements built for them.
type table struct {
	display string // schema.name, for messages
	quoted  string // quoted SQL name

	columns map[string]column

	writeID     bool // walrelay generates the id
	hasMetadata bool
	hasStatus   bool
	hasError    bool
	// hasRetry is set when the table has retry_count, max_retries and
	// scheduled_at, the columns of Event-Forge's retry policy.
	hasRetry bool

	// insertColumns and rowTemplate are the column list and one row of
	// VALUES. In rowTemplate, $1 is the source, shared by all rows, and
	// paramSlot marks a per-message parameter.
	insertColumns string
	rowTemplate   []string
}

// paramSlot marks a per-message parameter in table.rowTemplate.
const paramSlot = ""

// requiredColumns must exist in every inbox table.
var requiredColumns = []string{"message_id", "source", "event_type", "payload"}

// loadTable reads the columns of the table called name (schema.table or
// table) once and checks that walrelay can write it: the required columns,
// a unique index on (message_id, source), and no other NOT NULL column
// without a default. maxRetries is written into max_retries when the table
// has it.
func loadTable(ctx context.Context, db querier, name string, maxRetries int) (*table, error) {
	schema, relation, err := parseTable(name)
	if err != nil {
		return nil, err
	}
	t := &table{
		display: schema + "." + relation,
		quoted:  pgx.Identifier{schema, relation}.Sanitize(),
		columns: make(map[string]column),
	}

	rows, err := db.Query(ctx, `
		SELECT column_name::text, data_type::text, is_nullable = 'YES',
		       column_default IS NOT NULL OR is_identity = 'YES' OR is_generated <> 'NEVER',
		       coalesce(character_maximum_length, 0)::int
		FROM information_schema.columns
		WHERE table_schema = $1 AND table_name = $2
		ORDER BY ordinal_position`, schema, relation)
	if err != nil {
		return nil, fmt.Errorf("read the columns of inbox table %s: %w", t.display, err)
	}
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.name, &c.dataType, &c.nullable, &c.hasDefault, &c.maxLength); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the columns of inbox table %s: %w", t.display, err)
		}
		t.columns[c.name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the columns of inbox table %s: %w", t.display, err)
	}

	if len(t.columns) == 0 {
		return nil, &SchemaError{Table: t.display, Problem: "does not exist or is not visible to this user: run walrelay migrate, or point --table at Event-Forge's inbox table"}
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	if err := t.checkUniqueKey(ctx, db); err != nil {
		return nil, err
	}

	t.buildInsert(maxRetries)
	return t, nil
}

// parseTable splits "schema.table" or "table" (schema public).
func parseTable(s string) (schema, name string, err error) {
	schema, name, found := strings.Cut(s, ".")
	if !found {
		schema, name = "public", s
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return "", "", fmt.Errorf("invalid inbox table %q: use schema.table or table", s)
	}
	return schema, name, nil
}

// SchemaError is an inbox table that walrelay cannot write. A retry does
// not help: the table must change, or the configuration.
type SchemaError struct {
	Table   string
	Problem string
}

func (e *SchemaError) Error() string {
	return "inbox table " + e.Table + " " + e.Problem
}

// knownColumns are the columns whose values walrelay supplies. Every other
// column must be nullable or have a default.
var knownColumns = map[string]bool{
	"id": true, "message_id": true, "source": true, "event_type": true, "payload": true,
	"metadata": true, "status": true, "retry_count": true, "max_retries": true,
	"recovery_attempts": true, "created_at": true, "received_at": true, "updated_at": true,
}

func (t *table) check() error {
	for _, name := range requiredColumns {
		if _, ok := t.columns[name]; !ok {
			return &SchemaError{Table: t.display, Problem: fmt.Sprintf("has no column %q: it is not an Event-Forge inbox table", name)}
		}
	}

	for _, name := range []string{"payload", "metadata"} {
		c, ok := t.columns[name]
		if ok && c.dataType != "json" && c.dataType != "jsonb" {
			return &SchemaError{Table: t.display, Problem: fmt.Sprintf("column %q is %s, want json or jsonb", name, c.dataType)}
		}
	}

	for name, c := range t.columns {
		if knownColumns[name] || c.nullable || c.hasDefault {
			continue
		}
		return &SchemaError{Table: t.display, Problem: fmt.Sprintf("column %q is NOT NULL without a default, and walrelay has no value for it: give it a default", name)}
	}

	// walrelay writes the id when it can contain a UUID. An id of another
	// type (a serial, say) must fill itself from its default.
	if c, ok := t.columns["id"]; ok {
		t.writeID = c.dataType == "uuid" || (isCharType(c.dataType) && (c.maxLength == 0 || c.maxLength >= 36))
		if !t.writeID && !c.hasDefault && !c.nullable {
			return &SchemaError{Table: t.display, Problem: fmt.Sprintf("column \"id\" is %s without a default: walrelay writes UUIDs, so use uuid or varchar(36)", c.dataType)}
		}
	}

	_, t.hasMetadata = t.columns["metadata"]
	_, t.hasStatus = t.columns["status"]
	_, t.hasError = t.columns["error_message"]
	_, hasCount := t.columns["retry_count"]
	_, hasMax := t.columns["max_retries"]
	_, hasScheduled := t.columns["scheduled_at"]
	t.hasRetry = hasCount && hasMax && hasScheduled

	return nil
}

func isCharType(dataType string) bool {
	switch dataType {
	case "text", "character varying", "character":
		return true
	}
	return false
}

// checkUniqueKey makes sure ON CONFLICT (message_id, source) has a unique
// index to infer.
func (t *table) checkUniqueKey(ctx context.Context, db querier) error {
	var found bool
	err := db.QueryRow(ctx, `
		SELECT EXISTS (
			SELECT 1 FROM pg_index i
			WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
			  AND i.indexprs IS NULL AND i.indnkeyatts = 2
			  AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
			       FROM pg_attribute a
			       WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey[0:1]))
			      = ARRAY['message_id', 'source'])`, t.quoted).Scan(&found)
	if err != nil {
		return fmt.Errorf("read the indexes of inbox table %s: %w", t.display, err)
	}
	if !found {
		return &SchemaError{Table: t.display, Problem: "has no unique index on (message_id, source): add UNIQUE (message_id, source), which deduplication needs"}
	}
	return nil
}

// buildInsert prepares the column list and the row template of the insert.
func (t *table) buildInsert(maxRetries int) {
	var cols, row []string
	add := func(name, value string) {
		if _, ok := t.columns[name]; !ok {
			return
		}
		cols = append(cols, pgx.Identifier{name}.Sanitize())
		row = append(row, value)
	}

	// The parameters must come in the order appendArgs appends them.
	if t.writeID {
		add("id", paramSlot)
	}
	add("message_id", paramSlot)
	add("source", "$1")
	add("event_type", paramSlot)
	add("payload", paramSlot)
	add("metadata", paramSlot)
	add("status", "'received'")
	add("retry_count", "0")
	add("max_retries", strconv.Itoa(maxRetries))
	add("recovery_attempts", "0")
	add("created_at", "now()")
	add("received_at", "now()")
	add("updated_at", "now()")

	t.insertColumns = strings.Join(cols, ", ")
	t.rowTemplate = row
}

// insertSQL returns the statement that records n messages: one row each,
// duplicates skipped, and the message_id of each inserted row returned.
func (t *table) insertSQL(n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(t.quoted)
	b.WriteString(" (")
	b.WriteString(t.insertColumns)
	b.WriteString(") VALUES ")

	param := 2 // $1 is the source
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j, v := range t.rowTemplate {
			if j > 0 {
				b.WriteString(", ")
			}
			if v == paramSlot {
				b.WriteString("$" + strconv.Itoa(param))
				param++
				continue
			}
			b.WriteString(v)
		}
		b.WriteByte(')')
	}

	b.WriteString(" ON CONFLICT (message_id, source) DO NOTHING RETURNING message_id")
	return b.String()
}

// appendArgs appends the per-message parameters of m in the order of the
// row template.
func (t *table) appendArgs(args []any, m *Message) []any {
	if t.writeID {
		args = append(args, newUUID())
	}
	args = append(args, m.ID, m.EventType, string(m.Payload))
	if t.hasMetadata {
		args = append(args, t.metadataArg(m))
	}
	return args
}

// metadataArg returns the metadata parameter: nil for SQL NULL, or '{}'
// when the column is NOT NULL without a default.
func (t *table) metadataArg(m *Message) any {
	if m.Metadata != nil {
		return string(m.Metadata)
	}
	if c := t.columns["metadata"]; !c.nullable && !c.hasDefault {
		return "{}"
	}
	return nil
}

// checkLengths returns an ErrInvalidMessage error when a field of m is
// longer than its varchar column.
func (t *table) checkLengths(m *Message) error {
	for _, f := range []struct{ column, value string }{{"message_id", m.ID}, {"event_type", m.EventType}} {
		limit := t.columns[f.column].maxLength
		if limit > 0 && utf8.RuneCountInString(f.value) > limit {
			return fmt.Errorf("%w: %s is %d characters, longer than the %d of column %s", ErrInvalidMessage,
				f.column, utf8.RuneCountInString(f.value), limit, f.column)
		}
	}
	return nil
}

// checkSource returns an error when source does not fit the source column.
func (t *table) checkSource(source string) error {
	if source == "" {
		return fmt.Errorf("missing source: name the system the messages come from")
	}
	limit := t.columns["source"].maxLength
	if limit > 0 && utf8.RuneCountInString(source) > limit {
		return fmt.Errorf("invalid source %q: longer than the %d characters of column source", source, limit)
	}
	return nil
}

// newUUID returns a random (version 4) UUID in its text form.
func newUUID() string {
	return uuid.NewString()
}
