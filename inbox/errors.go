package inbox

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	amqp "github.com/rabbitmq/amqp091-go"
)

// sessionError is a failure that ends a session, with the side it came
// from.
type sessionError struct {
	side Side
	err  error
}

func (e *sessionError) Error() string { return e.err.Error() }
func (e *sessionError) Unwrap() error { return e.err }

func postgresFailed(format string, args ...any) error {
	return &sessionError{side: SidePostgres, err: fmt.Errorf(format, args...)}
}

func brokerFailed(format string, args ...any) error {
	return &sessionError{side: SideBroker, err: fmt.Errorf(format, args...)}
}

// failedSide returns the side that err came from, postgres when unknown.
func failedSide(err error) Side {
	var s *sessionError
	if errors.As(err, &s) {
		return s.side
	}
	return SidePostgres
}

// isPermanent reports whether err is a failure that a new session cannot
// fix: a table or configuration to change, or access the server denies.
func isPermanent(err error) bool {
	var schemaErr *SchemaError
	if errors.As(err, &schemaErr) {
		return true
	}

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch sqlStateClass(pgErr.Code) {
		case "42", // syntax error or access rule violation: a missing table or privilege
			"28": // invalid authorization
			return true
		}
		return pgErr.Code == "3D000" // the database does not exist
	}

	var parseErr *pgconn.ParseConfigError
	if errors.As(err, &parseErr) {
		return true
	}

	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) {
		switch amqpErr.Code {
		case amqp.AccessRefused, amqp.NotFound, amqp.PreconditionFailed, amqp.NotAllowed:
			return true
		}
	}

	return false
}

// isRowError reports whether Postgres rejected a row for its content
// (invalid JSON, a value too long, a violated constraint) rather than
// failing as a server.
func isRowError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch sqlStateClass(pgErr.Code) {
	case "22", // data exception
		"23": // integrity constraint violation
		return true
	}
	return pgErr.Code == "54000" // program limit exceeded: an index row too large
}

// sqlStateClass returns the two-character class of an SQLSTATE code.
func sqlStateClass(code string) string {
	if len(code) < 2 {
		return ""
	}
	return code[:2]
}
