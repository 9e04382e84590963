package inbox

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Config configures a Consumer. The zero value of a field means its
// default.
type Config struct {
	// PostgresURL is the connection string of the database that holds the
	// inbox table (URL or key=value form). Empty means the standard PG*
	// environment variables, else localhost.
	PostgresURL string

	// Table is the inbox table as schema.table or table. Default
	// public.inbox_messages.
	Table string

	// Source is written into the source column of every row. Together with
	// message_id it is the deduplication key. Required.
	Source string

	// MaxRetries is written into max_retries of new rows when the table has
	// that column: the handler attempts a Processor makes. Default 3.
	MaxRetries int

	// AMQPURL is the RabbitMQ URL. Default amqp://guest:guest@localhost:5672/.
	AMQPURL string

	// Queue is the queue to consume, declared durable. Required.
	Queue string

	// Bindings bind Queue to exchanges at start.
	Bindings []Binding

	// NoDeclareExchange disables declaring the exchanges of Bindings as
	// durable topic exchanges, so they must exist.
	NoDeclareExchange bool

	// DeadLetterExchange, when set, is declared as the queue's
	// x-dead-letter-exchange argument, so rejected messages go there. An
	// existing queue declared with other arguments makes the start fail.
	DeadLetterExchange string

	// Prefetch is the number of unacked deliveries the broker sends ahead,
	// from 1 to 65535. Default 256. One insert records up to
	// min(Prefetch, 1000) deliveries.
	Prefetch int

	// WriteTimeout bounds the recording of one batch, which a stop does not
	// interrupt, and also each Postgres health check and broker connect.
	// Default 30 s.
	WriteTimeout time.Duration

	// HealthInterval is how often an idle consumer checks its Postgres
	// connection, so Ready turns false while the database is down. Default
	// 5 s.
	HealthInterval time.Duration

	// Heartbeat is the AMQP heartbeat interval. Default 10 s.
	Heartbeat time.Duration

	// RetryInitial and RetryMax bound the backoff between sessions. Defaults
	// 500 ms and 30 s.
	RetryInitial time.Duration
	RetryMax     time.Duration

	// Observer receives events for metrics and health. Default: none.
	Observer Observer
}

// Binding binds the queue to Exchange with the routing key pattern Pattern.
type Binding struct {
	Exchange string
	Pattern  string
}

// ParseBinding parses "EXCHANGE:PATTERN". A missing pattern means "#",
// every routing key.
func ParseBinding(s string) (Binding, error) {
	exchange, pattern, found := strings.Cut(s, ":")
	if exchange == "" {
		return Binding{}, fmt.Errorf("invalid binding %q: use EXCHANGE:PATTERN, for example events:order.#", s)
	}
	if !found || pattern == "" {
		pattern = "#"
	}
	return Binding{Exchange: exchange, Pattern: pattern}, nil
}

func (b Binding) String() string {
	return b.Exchange + ":" + b.Pattern
}

// Defaults.
const (
	DefaultAMQPURL    = "amqp://guest:guest@localhost:5672/"
	DefaultPrefetch   = 256
	DefaultMaxRetries = 3

	// maxBatch caps the deliveries of one insert, which keeps its
	// parameter count (at most 5 per row) far below Postgres's 65535.
	maxBatch = 1000
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
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.AMQPURL == "" {
		c.AMQPURL = DefaultAMQPURL
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = 5 * time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = 500 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}

	if c.Queue == "" {
		return c, fmt.Errorf("missing queue: name the queue to consume")
	}
	if c.Source == "" {
		return c, fmt.Errorf("missing source: name the system the messages come from (it is part of the deduplication key)")
	}
	if _, _, err := parseTable(c.Table); err != nil {
		return c, err
	}
	if c.MaxRetries < 0 {
		return c, fmt.Errorf("invalid max retries %d: use 1 or more", c.MaxRetries)
	}
	if c.Prefetch < 1 || c.Prefetch > 65535 {
		return c, fmt.Errorf("invalid prefetch %d: use a number from 1 to 65535", c.Prefetch)
	}
	for _, b := range c.Bindings {
		if b.Exchange == "" || b.Pattern == "" {
			return c, fmt.Errorf("invalid binding %q: use EXCHANGE:PATTERN", b.String())
		}
	}
	if c.WriteTimeout < 0 || c.HealthInterval < 0 || c.Heartbeat < 0 || c.RetryInitial < 0 || c.RetryMax < 0 {
		return c, fmt.Errorf("invalid negative duration: use positive durations")
	}
	if _, err := pgconn.ParseConfig(c.PostgresURL); err != nil {
		return c, fmt.Errorf("invalid Postgres URL: %w", err)
	}
	if u, err := url.Parse(c.AMQPURL); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") {
		// The parse error would repeat the URL and its password.
		return c, fmt.Errorf("invalid AMQP URL: use amqp://user:password@host:port/vhost or amqps://")
	}

	return c, nil
}

// batchSize is the largest number of deliveries one insert records.
func (c Config) batchSize() int {
	return min(c.Prefetch, maxBatch)
}

// redactURL returns rawURL without its password, for logs.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<invalid URL>"
	}
	return u.Redacted()
}
