package relay

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/walrelay/walrelay/decode"
	"github.com/walrelay/walrelay/replication"
)

// Config configures a Relay. The zero value of a field means its default.
type Config struct {
	// PostgresURL is the connection string of the Postgres primary (URL or
	// key=value form). Empty means the standard PG* environment variables,
	// else localhost.
	PostgresURL string

	// Table is the outbox table as schema.table or table. Default
	// public.outbox_messages.
	Table string

	// Columns names the outbox table's columns. Default: Event-Forge's.
	Columns decode.Columns

	// Publication is the publication to stream; created FOR TABLE Table
	// WITH (publish = 'insert') when missing. Default walrelay.
	Publication string

	// Slot is the logical replication slot. Default walrelay.
	Slot string

	// NoCreate disables creating a missing publication or slot; Run then
	// fails with an error saying what is missing.
	NoCreate bool

	// MessagePrefix is the prefix of pg_logical_emit_message messages that
	// become broker messages. Default walrelay.
	MessagePrefix string

	// AMQPURL is the RabbitMQ URL. Default amqp://guest:guest@localhost:5672/.
	AMQPURL string

	// AMQPURLs are further broker URLs, such as the other nodes of a
	// cluster. After a failed session the relay connects to the next URL in
	// turn.
	AMQPURLs []string

	// AMQPCACert, AMQPClientCert and AMQPClientKey are PEM files for
	// amqps:// URLs: the CA that signs the broker's certificate (default:
	// the system roots), and the client certificate and key when the broker
	// requires one.
	AMQPCACert     string
	AMQPClientCert string
	AMQPClientKey  string

	// OnUnroutable is the policy for a message the broker returns as
	// unroutable: PolicyRetry (default) holds the position and retries with
	// backoff; PolicyDeadLetter publishes it to DeadLetterExchange.
	OnUnroutable string

	// OnInvalid is the policy for a row that cannot become a message:
	// PolicyHalt (default) stops the relay with the position held before
	// it; PolicyDeadLetter publishes the raw row and the error to
	// DeadLetterExchange and goes on.
	OnInvalid string

	// DeadLetterExchange receives dead-lettered messages; required when a
	// policy is PolicyDeadLetter. It is declared (topic, durable) unless
	// NoDeclareExchange is set.
	DeadLetterExchange string

	// ConfirmTimeout is how long published messages may wait for a broker
	// confirm, while the broker does not block publishing, before the
	// connection counts as hung. Default 30 s.
	ConfirmTimeout time.Duration

	// Exchange is the default exchange (topic, durable). Default events.
	Exchange string

	// NoDeclareExchange disables declaring Exchange and DelayedExchange.
	NoDeclareExchange bool

	// DelayedExchange is an x-delayed-message exchange for delayed messages;
	// empty means delayed messages are published at once, with a warning.
	DelayedExchange string

	// MaxInFlight is the maximum number of published but unconfirmed
	// messages. Default 1000.
	MaxInFlight int

	// StatusInterval is how often a standby status update goes to Postgres
	// when the flush position has not moved, and how often the checkpoint
	// is stored. Default 10 s.
	StatusInterval time.Duration

	// ReceiveTimeout is how long the replication connection may stay silent,
	// while the relay requests replies, before it counts as dead.
	// Default 3 x StatusInterval, at least 30 s.
	ReceiveTimeout time.Duration

	// ShutdownTimeout bounds the wait for outstanding confirms on shutdown.
	// Default 30 s.
	ShutdownTimeout time.Duration

	// Backfill selects the rows committed before a slot that walrelay
	// creates, which the slot's stream does not contain: BackfillPending
	// (default: Event-Forge status pending or failed), BackfillAll or
	// BackfillNone.
	Backfill string

	// Recover recreates a missing or invalidated slot and publishes the
	// rows created since the stored last commit time minus RecoveryMargin
	// (default 5 minutes) before streaming. Consumers may see duplicates.
	Recover        bool
	RecoveryMargin time.Duration

	// StartLSN, when set, starts streaming there instead of at the slot's
	// confirmed position, skipping what lies between on purpose. It must not
	// be older than the confirmed position: a logical slot cannot rewind.
	StartLSN pglogrepl.LSN

	// MarkPublished sets status 'published' and updated_at on relayed rows
	// after their confirms, in batches, for tools that read Event-Forge's
	// status. Off by default, because it writes to every row.
	MarkPublished bool

	// Retention, when set, deletes relayed rows older than it, in small
	// batches; never a row created after the last relayed commit.
	Retention time.Duration

	// FailoverSlot creates the slot with the FAILOVER option, which needs
	// PostgreSQL 17, so the server synchronizes it to standbys.
	FailoverSlot bool

	// BackfillProgress, when set, is called during a backfill about once a
	// second with the rows confirmed so far and the rows selected, for a
	// progress bar.
	BackfillProgress func(done, total int64)

	// Observer receives events for metrics and health. Default: none.
	Observer Observer

	// RetryInitial and RetryMax bound the backoff between sessions. Defaults
	// 500 ms and 30 s.
	RetryInitial time.Duration
	RetryMax     time.Duration
}

// Backfill modes.
const (
	BackfillPending = "pending"
	BackfillAll     = "all"
	BackfillNone    = "none"
)

// Policies for OnUnroutable and OnInvalid.
const (
	PolicyRetry      = "retry"
	PolicyHalt       = "halt"
	PolicyDeadLetter = "dead-letter"
)

// Defaults.
const (
	DefaultTable           = "public.outbox_messages"
	DefaultPublication     = "walrelay"
	DefaultSlot            = "walrelay"
	DefaultMessagePrefix   = "walrelay"
	DefaultAMQPURL         = "amqp://guest:guest@localhost:5672/"
	DefaultExchange        = "events"
	DefaultMaxInFlight     = 1000
	DefaultStatusInterval  = 10 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
)

// Validate returns the error New would return for c, without connecting to
// anything.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns c with every zero field set to its default, and
// validates the result.
func (c Config) withDefaults() (Config, error) {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.MessagePrefix == "" {
		c.MessagePrefix = DefaultMessagePrefix
	}
	if c.AMQPURL == "" {
		c.AMQPURL = DefaultAMQPURL
	}
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.ReceiveTimeout == 0 {
		c.ReceiveTimeout = max(3*c.StatusInterval, 30*time.Second)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.OnUnroutable == "" {
		c.OnUnroutable = PolicyRetry
	}
	if c.OnInvalid == "" {
		c.OnInvalid = PolicyHalt
	}
	if c.ConfirmTimeout == 0 {
		c.ConfirmTimeout = 30 * time.Second
	}
	if c.Backfill == "" {
		c.Backfill = BackfillPending
	}
	if c.RecoveryMargin == 0 {
		c.RecoveryMargin = 5 * time.Minute
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}

	if _, err := replication.ParseTable(c.Table); err != nil {
		return c, err
	}
	if err := replication.ValidateSlotName(c.Slot); err != nil {
		return c, err
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > 1_000_000 {
		return c, fmt.Errorf("invalid max in-flight %d: use a number from 1 to 1000000", c.MaxInFlight)
	}
	if c.StatusInterval < 100*time.Millisecond || c.StatusInterval > 10*time.Minute {
		return c, fmt.Errorf("invalid status interval %s: use a duration from 100ms to 10m", c.StatusInterval)
	}
	if c.ReceiveTimeout <= c.StatusInterval {
		return c, fmt.Errorf("invalid receive timeout %s: it must be longer than the status interval %s", c.ReceiveTimeout, c.StatusInterval)
	}
	if c.OnUnroutable != PolicyRetry && c.OnUnroutable != PolicyDeadLetter {
		return c, fmt.Errorf("invalid on-unroutable policy %q: use %s or %s", c.OnUnroutable, PolicyRetry, PolicyDeadLetter)
	}
	if c.OnInvalid != PolicyHalt && c.OnInvalid != PolicyDeadLetter {
		return c, fmt.Errorf("invalid on-invalid policy %q: use %s or %s", c.OnInvalid, PolicyHalt, PolicyDeadLetter)
	}
	if (c.OnUnroutable == PolicyDeadLetter || c.OnInvalid == PolicyDeadLetter) && c.DeadLetterExchange == "" {
		return c, fmt.Errorf("the dead-letter policy needs a dead-letter exchange: set --dead-letter-exchange")
	}
	if (c.AMQPClientCert == "") != (c.AMQPClientKey == "") {
		return c, fmt.Errorf("a client certificate needs its key and the other way round: set both --amqp-cert and --amqp-key")
	}
	if c.Backfill != BackfillPending && c.Backfill != BackfillAll && c.Backfill != BackfillNone {
		return c, fmt.Errorf("invalid backfill mode %q: use %s, %s or %s", c.Backfill, BackfillPending, BackfillAll, BackfillNone)
	}
	if c.Retention < 0 {
		return c, fmt.Errorf("invalid retention %s: use a positive duration, or 0 to keep every row", c.Retention)
	}
	if c.RecoveryMargin < 0 {
		return c, fmt.Errorf("invalid recovery margin %s: use a positive duration", c.RecoveryMargin)
	}
	if c.ConfirmTimeout < 0 {
		return c, fmt.Errorf("invalid confirm timeout %s: use a positive duration", c.ConfirmTimeout)
	}
	if c.ShutdownTimeout < 0 {
		return c, fmt.Errorf("invalid shutdown timeout %s: use a positive duration", c.ShutdownTimeout)
	}

	return c, nil
}
