package inbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
)

// DB is the Postgres access a Processor needs. *pgxpool.Pool and *pgx.Conn
// both implement it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Handler applies the effects of m through tx, the transaction that also
// marks m processed. It must neither commit nor roll back tx. Returning an
// error rolls back everything the handler wrote. Wrap the error with
// Permanent to skip the remaining attempts.
type Handler func(ctx context.Context, tx pgx.Tx, m Message) error

// ProcessorConfig configures a Processor. The zero value of a field means
// its default.
type ProcessorConfig struct {
	// Table is the inbox table as schema.table or table. Default
	// public.inbox_messages.
	Table string

	// Source is the source column of the rows this processor owns. With
	// message_id it is the deduplication key. Required.
	Source string

	// MaxRetries is the number of handler attempts before a message is
	// marked failed. It is written into max_retries of new rows, and a
	// row's stored max_retries wins over it later. Default 3.
	MaxRetries int

	// RetryBase is the delay before the first retry, and each further retry
	// doubles it, up to RetryMax, with 10% jitter. Defaults 2 s and 1 h, as
	// in Event-Forge.
	RetryBase time.Duration
	RetryMax  time.Duration

	// PollInterval is how often RunDue looks for due messages. Default 5 s.
	PollInterval time.Duration

	// PollBatch is the maximum number of messages one ProcessDue call
	// handles. Default 10.
	PollBatch int
}

func (c ProcessorConfig) withDefaults() (ProcessorConfig, error) {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.RetryBase == 0 {
		c.RetryBase = 2 * time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Hour
	}
	if c.PollInterval == 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.PollBatch == 0 {
		c.PollBatch = 10
	}

	if c.Source == "" {
		return c, fmt.Errorf("missing source: name the system the messages come from (it is part of the deduplication key)")
	}
	if c.MaxRetries < 0 || c.RetryBase < 0 || c.RetryMax < c.RetryBase || c.PollInterval < 0 || c.PollBatch < 0 {
		return c, fmt.Errorf("invalid processor config: MaxRetries, RetryBase, PollInterval and PollBatch must not be negative, and RetryMax must be at least RetryBase")
	}
	return c, nil
}

// Outcome is the result of processing one message. Every outcome is final
// for the delivery, so the caller acks it.
type Outcome int

const (
	// Processed: the handler ran and its writes committed with the row.
	Processed Outcome = iota + 1
	// Duplicate: the message was processed before, so the handler did not run.
	Duplicate
	// RetryScheduled: the handler failed, or failed before and its retry is
	// not due yet. The row stores the next attempt time in scheduled_at,
	// and ProcessDue runs it then.
	RetryScheduled
	// Failed: the handler failed its last attempt, in this call or before.
	// The row's status is failed and the handler will not run again.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Processed:
		return "processed"
	case Duplicate:
		return "duplicate"
	case RetryScheduled:
		return "retry scheduled"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Result is the outcome of Process.
type Result struct {
	Outcome Outcome
	// Attempts is the number of failed handler attempts stored for the
	// message (its retry_count), or made in this call when the table has
	// no retry columns.
	Attempts int
	// RetryAt is the time of the next attempt, for RetryScheduled.
	RetryAt time.Time
	// Err is the handler's error, for RetryScheduled and Failed when the
	// handler ran in this call.
	Err error
}

// permanentError marks a handler error that no retry can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps a handler error so that the message is marked failed at
// once, without further attempts.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// Processor records messages and runs their handlers, each message in one
// transaction. It is safe for concurrent use.
type Processor struct {
	db    DB
	cfg   ProcessorConfig
	table *table
	log   zerolog.Logger
}

// NewProcessor reads the inbox table's columns once and returns a
// Processor. The table needs a status column. Whether it also has
// retry_count, max_retries and scheduled_at chooses the retry policy. With
// them, a failed message is stored with its next attempt time, and
// ProcessDue runs it then. Without them, Process retries in the same call.
func NewProcessor(ctx context.Context, db DB, cfg ProcessorConfig, log zerolog.Logger) (*Processor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}

	t, err := loadTable(ctx, db, cfg.Table, cfg.MaxRetries)
	if err != nil {
		return nil, err
	}
	if err := t.checkSource(cfg.Source); err != nil {
		return nil, err
	}
	if !t.hasStatus {
		return nil, &SchemaError{Table: t.display, Problem: "has no status column, which the handler API needs to mark messages processed"}
	}

	return &Processor{db: db, cfg: cfg, table: t, log: log.With().Str("source", cfg.Source).Logger()}, nil
}

// Handle parses d and processes it. A delivery that Parse rejects returns
// an error wrapping ErrInvalidMessage: reject it without requeue. Any other
// error means nothing was committed: leave the delivery unacked or nack
// it with requeue. Every Result is final: ack the delivery.
func (p *Processor) Handle(ctx context.Context, d amqp.Delivery, h Handler) (Result, error) {
	m, err := Parse(d)
	if err != nil {
		return Result{}, err
	}
	return p.Process(ctx, m, h)
}

// Process records m and runs h for it in one transaction, unless the
// message was processed before (Duplicate), failed for good (Failed) or
// waits for a scheduled retry (RetryScheduled).
//
// When h fails, its writes roll back. With retry columns, the row then
// stores the failure (status failed, retry_count + 1, error_message and
// scheduled_at for the next attempt) and Process returns RetryScheduled,
// or Failed once MaxRetries attempts have failed. Without them, Process
// sleeps with the same backoff and tries again, up to MaxRetries attempts,
// then stores status failed.
//
// An error means the database failed, ctx was canceled or m does not fit
// the table. Nothing was committed then.
func (p *Processor) Process(ctx context.Context, m Message, h Handler) (Result, error) {
	if err := p.table.checkLengths(&m); err != nil {
		return Result{}, err
	}

	for attempt := 1; ; attempt++ {
		res, retry, err := p.attempt(ctx, m, h, attempt)
		if err != nil || !retry {
			return res, err
		}

		delay := p.backoff(attempt - 1)
		p.log.Warn().Err(res.Err).Str("message_id", m.ID).Int("attempt", attempt).Dur("delay", delay).
			Msg("handler failed; retrying")
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// rowState is the stored state of a message, read under a row lock.
type rowState struct {
	status      string
	retryCount  int
	maxRetries  int
	scheduledAt *time.Time
}

// attempt makes one transaction: record m, lock its row, and run h when
// the row's state allows. retry is set when the table has no retry columns
// and the handler failed an attempt that is not the last. Nothing was
// committed then.
func (p *Processor) attempt(ctx context.Context, m Message, h Handler, attempt int) (res Result, retry bool, err error) {
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return Result{}, false, fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	args := p.table.appendArgs([]any{p.cfg.Source}, &m)
	if _, err := tx.Exec(ctx, p.table.insertSQL(1), args...); err != nil {
		return Result{}, false, fmt.Errorf("record message %q in %s: %w", m.ID, p.table.display, err)
	}

	st, err := p.lockRow(ctx, tx, m.ID)
	if err != nil {
		return Result{}, false, err
	}

	if res, done := p.skip(st); done {
		return res, false, p.commit(ctx, tx, m.ID)
	}

	herr := runHandler(ctx, tx, m, h)
	if herr == nil {
		if err := p.markProcessed(ctx, tx, m.ID); err != nil {
			return Result{}, false, err
		}
		return Result{Outcome: Processed, Attempts: st.retryCount}, false, p.commit(ctx, tx, m.ID)
	}
	if ctx.Err() != nil {
		return Result{}, false, ctx.Err()
	}

	var perm *permanentError
	final := errors.As(herr, &perm)

	if !p.table.hasRetry {
		if !final && attempt < p.cfg.MaxRetries {
			return Result{Outcome: RetryScheduled, Attempts: attempt, Err: herr}, true, nil
		}
		if err := p.markFailed(ctx, tx, m.ID, herr, st, nil); err != nil {
			return Result{}, false, err
		}
		return Result{Outcome: Failed, Attempts: attempt, Err: herr}, false, p.commit(ctx, tx, m.ID)
	}

	st.retryCount++
	if final || st.retryCount >= st.maxRetries {
		if err := p.markFailed(ctx, tx, m.ID, herr, st, nil); err != nil {
			return Result{}, false, err
		}
		return Result{Outcome: Failed, Attempts: st.retryCount, Err: herr}, false, p.commit(ctx, tx, m.ID)
	}

	retryAt := time.Now().Add(p.backoff(st.retryCount - 1))
	if err := p.markFailed(ctx, tx, m.ID, herr, st, &retryAt); err != nil {
		return Result{}, false, err
	}
	return Result{Outcome: RetryScheduled, Attempts: st.retryCount, RetryAt: retryAt, Err: herr}, false, p.commit(ctx, tx, m.ID)
}

// skip returns the outcome for a row whose state forbids running the
// handler now.
func (p *Processor) skip(st rowState) (Result, bool) {
	switch st.status {
	case "processed":
		return Result{Outcome: Duplicate, Attempts: st.retryCount}, true
	case "permanently_failed":
		return Result{Outcome: Failed, Attempts: st.retryCount}, true
	case "failed":
		if !p.table.hasRetry || st.retryCount >= st.maxRetries {
			return Result{Outcome: Failed, Attempts: st.retryCount}, true
		}
		if st.scheduledAt != nil && st.scheduledAt.After(time.Now()) {
			return Result{Outcome: RetryScheduled, Attempts: st.retryCount, RetryAt: *st.scheduledAt}, true
		}
	}
	// received, processing (left by a worker that stopped), or a failed
	// message whose retry is due.
	return Result{}, false
}

// runHandler runs h under a savepoint, so that a failing handler's writes
// roll back while the transaction stays usable for recording the failure.
func runHandler(ctx context.Context, tx pgx.Tx, m Message, h Handler) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create savepoint: %w", err)
	}

	if herr := h(ctx, sp, m); herr != nil {
		if err := sp.Rollback(ctx); err != nil {
			return errors.Join(herr, fmt.Errorf("roll back the handler's writes: %w", err))
		}
		return herr
	}
	return sp.Commit(ctx)
}

func (p *Processor) lockRow(ctx context.Context, tx pgx.Tx, messageID string) (rowState, error) {
	sql := "SELECT status::text, 0, 0, NULL::timestamptz"
	if p.table.hasRetry {
		sql = "SELECT status::text, retry_count, max_retries, scheduled_at"
	}
	sql += " FROM " + p.table.quoted + " WHERE message_id = $1 AND source = $2 FOR UPDATE"

	var st rowState
	err := tx.QueryRow(ctx, sql, messageID, p.cfg.Source).Scan(&st.status, &st.retryCount, &st.maxRetries, &st.scheduledAt)
	if err != nil {
		return rowState{}, fmt.Errorf("lock message %q in %s: %w", messageID, p.table.display, err)
	}
	return st, nil
}

func (p *Processor) markProcessed(ctx context.Context, tx pgx.Tx, messageID string) error {
	sql := "UPDATE " + p.table.quoted + " SET status = 'processed'"
	if _, ok := p.table.columns["processed_at"]; ok {
		sql += ", processed_at = now()"
	}
	if _, ok := p.table.columns["updated_at"]; ok {
		sql += ", updated_at = now()"
	}
	sql += " WHERE message_id = $1 AND source = $2"

	if _, err := tx.Exec(ctx, sql, messageID, p.cfg.Source); err != nil {
		return fmt.Errorf("mark message %q processed in %s: %w", messageID, p.table.display, err)
	}
	return nil
}

// markFailed stores a failed attempt: status failed, the error, and with
// retry columns the new retry_count and retryAt (nil when no retry
// follows).
func (p *Processor) markFailed(ctx context.Context, tx pgx.Tx, messageID string, herr error, st rowState, retryAt *time.Time) error {
	sql := "UPDATE " + p.table.quoted + " SET status = 'failed'"
	args := []any{messageID, p.cfg.Source}
	if p.table.hasError {
		args = append(args, errorText(herr))
		sql += fmt.Sprintf(", error_message = $%d", len(args))
	}
	if p.table.hasRetry {
		args = append(args, st.retryCount, retryAt)
		sql += fmt.Sprintf(", retry_count = $%d, scheduled_at = $%d", len(args)-1, len(args))
	}
	if _, ok := p.table.columns["updated_at"]; ok {
		sql += ", updated_at = now()"
	}
	sql += " WHERE message_id = $1 AND source = $2"

	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("mark message %q failed in %s: %w", messageID, p.table.display, err)
	}
	return nil
}

func (p *Processor) commit(ctx context.Context, tx pgx.Tx, messageID string) error {
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit message %q: %w", messageID, err)
	}
	return nil
}

// backoff returns the delay before retry n+1 (n from 0): RetryBase * 2^n,
// at most RetryMax, with up to 10% jitter either way.
func (p *Processor) backoff(n int) time.Duration {
	d := p.cfg.RetryBase
	for range n {
		if d >= p.cfg.RetryMax/2 {
			d = p.cfg.RetryMax
			break
		}
		d *= 2
	}
	d = min(d, p.cfg.RetryMax)
	jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	return d + jitter
}

// errorText makes err storable in a text column: valid UTF-8 without NUL
// bytes, at most 4000 bytes.
func errorText(err error) string {
	const limit = 4000
	s := err.Error()
	if len(s) > limit {
		s = s[:limit]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
