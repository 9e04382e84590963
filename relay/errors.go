package relay

import (
	"context"
	"errors"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// permanentError marks a failure that a retry cannot fix: a configuration
// or server setting to change, or a row the relay must not skip.
type permanentError struct {
	err error
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// isPermanent reports whether err should stop the relay instead of starting
// a new session.
func isPermanent(err error) bool {
	var p *permanentError
	if errors.As(err, &p) {
		return true
	}

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "3D000": // invalid_catalog_name: the database does not exist
			return true
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "28": // invalid authorization
			return true
		}
	}

	var parseErr *pgconn.ParseConfigError
	return errors.As(err, &parseErr)
}

// isNetworkError reports whether err came from the network rather than
// from a server's error response.
func isNetworkError(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded)
}
