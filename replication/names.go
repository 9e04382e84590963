package replication

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// slotNamePattern is the set of names Postgres accepts for replication
// slots: lowercase letters, digits and underscores, at most 63 bytes.
var slotNamePattern = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// ValidateSlotName returns an error unless name is a valid slot name.
func ValidateSlotName(name string) error {
	if !slotNamePattern.MatchString(name) {
		return fmt.Errorf("invalid slot name %q: use 1 to 63 lowercase letters, digits or underscores", name)
	}

	return nil
}

// Table is a schema-qualified table name.
type Table struct {
	Schema string
	Name   string
}

// ParseTable splits "schema.table" or "table" (schema public). Names are
// taken as written, without case folding, as they appear in pg_class.
func ParseTable(s string) (Table, error) {
	schema, name, found := strings.Cut(s, ".")
	if !found {
		schema, name = "public", s
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return Table{}, fmt.Errorf("invalid table %q: use schema.table or table", s)
	}

	return Table{Schema: schema, Name: name}, nil
}

// Quoted returns the table as a quoted SQL identifier.
func (t Table) Quoted() string {
	return pgx.Identifier{t.Schema, t.Name}.Sanitize()
}

func (t Table) String() string {
	return t.Schema + "." + t.Name
}

// quoteIdent quotes one SQL identifier.
func quoteIdent(name string) string {
	return pgx.Identifier{name}.Sanitize()
}

// quoteLiteral quotes s as an SQL string literal for the replication
// protocol's simple queries, which take no parameters.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
