package sink

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrClosed is wrapped by every error that means the publisher's connection
// or channel is gone. Messages published but not yet confirmed must be
// treated as unconfirmed and published again on a new Publisher.
var ErrClosed = errors.New("broker connection closed")

// errClosedByCaller is the reason Err returns after Close.
var errClosedByCaller = fmt.Errorf("publisher closed by Close: %w", ErrClosed)

// CloseError is the reason the broker or the network closed the publisher's
// connection or channel. It wraps ErrClosed.
type CloseError struct {
	// Scope is "connection" or "channel".
	Scope string

	// Code is the AMQP reply code, such as 404 (NOT_FOUND, a missing
	// exchange) or 320 (CONNECTION_FORCED, a broker shutdown). amqp091 uses
	// 501 (FRAME_ERROR) for a network failure.
	Code int

	// Reason is the AMQP reply text, or the network error.
	Reason string

	// Server reports whether the broker sent the close.
	Server bool

	// Recover is amqp091's Error.Recover: true when retrying later or with
	// other parameters may succeed.
	Recover bool
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("broker %s closed with %d %s", e.Scope, e.Code, e.Reason)
}

// Unwrap returns ErrClosed.
func (e *CloseError) Unwrap() error { return ErrClosed }

// newCloseError converts an amqp091 close notification. A nil e stands for
// a close without an error, which only Close causes.
func newCloseError(scope string, e *amqp.Error) error {
	if e == nil {
		return fmt.Errorf("broker %s closed without an error: %w", scope, ErrClosed)
	}
	return &CloseError{Scope: scope, Code: e.Code, Reason: e.Reason, Server: e.Server, Recover: e.Recover}
}

// amqpCode returns the reply code of an amqp091 error, or 0.
func amqpCode(err error) int {
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) {
		return amqpErr.Code
	}
	return 0
}
