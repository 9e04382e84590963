package inbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
)

// healthySession is how long a session must run before a failure starts
// the backoff from its initial delay again.
const healthySession = 30 * time.Second

// Consumer consumes one queue and records each delivery in the inbox table.
// Create it with New and start it with Run, once per Consumer. Ready,
// Consuming and Stats are safe to call from other goroutines.
type Consumer struct {
	cfg Config
	log zerolog.Logger

	// pool and table are set by Run before the first session.
	pool  *pgxpool.Pool
	table *table

	connected     atomic.Bool
	consuming     chan struct{}
	consumingOnce sync.Once

	received, redelivered, recorded, duplicates, rejected, reconnects atomic.Uint64
}

// New validates cfg and returns a Consumer. It connects to nothing.
func New(cfg Config, log zerolog.Logger) (*Consumer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}

	return &Consumer{
		cfg:       cfg,
		log:       log.With().Str("queue", cfg.Queue).Str("source", cfg.Source).Logger(),
		consuming: make(chan struct{}),
	}, nil
}

// Ready reports whether the consumer is connected to both Postgres and the
// broker and consuming. It turns false when either side fails, and for an
// idle consumer within Config.HealthInterval of Postgres going away.
func (c *Consumer) Ready() bool {
	return c.connected.Load()
}

// Consuming returns a channel that is closed when the first session starts
// consuming.
func (c *Consumer) Consuming() <-chan struct{} {
	return c.consuming
}

// Stats returns the counters since New.
func (c *Consumer) Stats() Stats {
	return Stats{
		Received:    c.received.Load(),
		Redelivered: c.redelivered.Load(),
		Recorded:    c.recorded.Load(),
		Duplicates:  c.duplicates.Load(),
		Rejected:    c.rejected.Load(),
		Reconnects:  c.reconnects.Load(),
	}
}

// Run consumes until ctx is canceled or a permanent error occurs. On cancel
// it finishes the batch in progress (commit, then ack), closes the broker
// connection, which returns the unacked prefetched deliveries to the
// queue, and returns nil. A failure of Postgres or the broker ends the
// session without acking what it has not recorded, and a new session
// starts after an exponential backoff with jitter, so the broker delivers
// the unacked messages again. Errors a retry cannot fix (a table walrelay
// cannot write, access denied, a queue declared with other arguments) are
// returned.
func (c *Consumer) Run(ctx context.Context) error {
	poolCfg, err := pgxpool.ParseConfig(c.cfg.PostgresURL)
	if err != nil {
		return fmt.Errorf("invalid Postgres URL: %w", err)
	}
	// One connection records the batches, and a second serves the health
	// check when a failure left the first one in use.
	poolCfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("create Postgres pool: %w", err)
	}
	defer pool.Close()
	c.pool = pool

	if err := c.loadTable(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	c.log.Info().Str("table", c.table.display).Int("prefetch", c.cfg.Prefetch).
		Bool("writes_id", c.table.writeID).Bool("retry_columns", c.table.hasRetry).
		Msg("inbox started")

	retry := c.newBackoff()
	attempt := 0
	var lastFailure Side
	for {
		started := time.Now()
		err := c.session(ctx, attempt > 0, lastFailure)
		if ctx.Err() != nil {
			c.logStopped()
			return nil
		}
		if isPermanent(err) {
			return err
		}

		if time.Since(started) > healthySession {
			retry.Reset()
			attempt = 0
		}
		attempt++
		lastFailure = failedSide(err)
		delay := retry.NextBackOff()
		c.log.Warn().Err(err).Str("side", string(lastFailure)).Int("attempt", attempt).Dur("delay", delay).
			Msg("inbox session failed; retrying")

		select {
		case <-ctx.Done():
			c.logStopped()
			return nil
		case <-time.After(delay):
		}
	}
}

func (c *Consumer) newBackoff() *backoff.ExponentialBackOff {
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval = c.cfg.RetryInitial
	retry.MaxInterval = c.cfg.RetryMax
	retry.MaxElapsedTime = 0
	retry.Reset()
	return retry
}

func (c *Consumer) logStopped() {
	s := c.Stats()
	c.log.Info().Uint64("received", s.Received).Uint64("redelivered", s.Redelivered).
		Uint64("recorded", s.Recorded).Uint64("duplicates", s.Duplicates).
		Uint64("rejected", s.Rejected).Uint64("reconnects", s.Reconnects).
		Msg("inbox stopped")
}

// loadTable reads the inbox table's columns, retrying while Postgres cannot
// be reached, so the consumer can start before the database does.
func (c *Consumer) loadTable(ctx context.Context) error {
	attempt := 0
	op := func() error {
		attempt++
		t, err := loadTable(ctx, c.pool, c.cfg.Table, c.cfg.MaxRetries)
		if err == nil {
			err = t.checkSource(c.cfg.Source)
			c.table = t
		}
		if err == nil || isPermanent(err) || ctx.Err() != nil {
			return backoff.Permanent(err)
		}
		return err
	}
	notify := func(err error, delay time.Duration) {
		c.log.Warn().Err(err).Int("attempt", attempt).Dur("delay", delay).Msg("cannot read the inbox table; retrying")
	}

	return backoff.RetryNotify(op, backoff.WithContext(c.newBackoff(), ctx), notify)
}

// session checks Postgres, connects to the broker, declares the queue and
// consumes until ctx is canceled (nil) or a side fails.
func (c *Consumer) session(ctx context.Context, reconnect bool, lastFailure Side) error {
	// Postgres first: deliveries that cannot be recorded would only wait
	// unacked.
	if err := c.ping(ctx); err != nil {
		return err
	}

	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()

	ch, err := conn.Channel()
	if err != nil {
		return brokerFailed("open channel: %w", err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))

	if err := c.declare(ch); err != nil {
		return err
	}
	if err := ch.Qos(c.cfg.Prefetch, 0, false); err != nil {
		return brokerFailed("set prefetch %d: %w", c.cfg.Prefetch, err)
	}
	deliveries, err := ch.Consume(c.cfg.Queue, "", false, false, false, false, nil)
	if err != nil {
		return brokerFailed("consume queue %q: %w", c.cfg.Queue, err)
	}

	c.setConnected(true)
	defer c.setConnected(false)
	if reconnect {
		c.reconnects.Add(1)
		c.cfg.Observer.Reconnected(lastFailure)
		c.log.Info().Str("side", string(lastFailure)).Msg("inbox reconnected")
	}
	c.consumingOnce.Do(func() { close(c.consuming) })
	c.log.Info().Str("amqp_url", redactURL(c.cfg.AMQPURL)).Msg("inbox consuming")

	return c.consume(ctx, ch, deliveries, closed)
}

// consume records deliveries until ctx is canceled or a side fails.
func (c *Consumer) consume(ctx context.Context, ch *amqp.Channel, deliveries <-chan amqp.Delivery, closed <-chan *amqp.Error) error {
	health := time.NewTicker(c.cfg.HealthInterval)
	defer health.Stop()
	lastWrite := time.Now()

	for {
		select {
		case <-ctx.Done():
			return nil

		case d, ok := <-deliveries:
			if !ok {
				return brokerFailed("the broker closed the channel: %w", channelError(closed))
			}
			batch := c.collect(d, deliveries)
			if err := c.handleBatch(ctx, ch, batch); err != nil {
				return err
			}
			lastWrite = time.Now()

		case <-health.C:
			if time.Since(lastWrite) < c.cfg.HealthInterval {
				continue
			}
			if err := c.ping(ctx); err != nil {
				return err
			}
		}
	}
}

// collect returns first and the deliveries already waiting, up to the
// batch size. It does not wait for more.
func (c *Consumer) collect(first amqp.Delivery, deliveries <-chan amqp.Delivery) []amqp.Delivery {
	batch := []amqp.Delivery{first}
	for len(batch) < c.cfg.batchSize() {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return batch
			}
			batch = append(batch, d)
		default:
			return batch
		}
	}
	return batch
}

// ping sends a ping to Postgres and fails when no reply arrives within
// WriteTimeout.
func (c *Consumer) ping(ctx context.Context) error {
	pingCtx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()

	if err := c.pool.Ping(pingCtx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return postgresFailed("ping Postgres: %w", err)
	}
	return nil
}

// dial connects to the broker. A canceled ctx aborts the connect.
func (c *Consumer) dial(ctx context.Context) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("walrelay inbox " + c.cfg.Queue)

	dialer := net.Dialer{Timeout: c.cfg.WriteTimeout}
	conn, err := amqp.DialConfig(c.cfg.AMQPURL, amqp.Config{
		Heartbeat:  c.cfg.Heartbeat,
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			nc, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// amqp091 clears the deadline once the handshake is done.
			if err := nc.SetDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
				_ = nc.Close()
				return nil, err
			}
			return nc, nil
		},
	})
	if err != nil {
		return nil, brokerFailed("connect to RabbitMQ at %s: %w", redactURL(c.cfg.AMQPURL), err)
	}
	return conn, nil
}

// declare declares the queue (durable), the exchanges of the bindings
// unless disabled, and the bindings.
func (c *Consumer) declare(ch *amqp.Channel) error {
	var args amqp.Table
	if c.cfg.DeadLetterExchange != "" {
		args = amqp.Table{"x-dead-letter-exchange": c.cfg.DeadLetterExchange}
	}
	if _, err := ch.QueueDeclare(c.cfg.Queue, true, false, false, false, args); err != nil {
		return brokerFailed("declare queue %q as durable (dead-letter exchange %q): %w; an existing queue must have the same arguments",
			c.cfg.Queue, c.cfg.DeadLetterExchange, err)
	}

	for _, b := range c.cfg.Bindings {
		if !c.cfg.NoDeclareExchange {
			if err := ch.ExchangeDeclare(b.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
				return brokerFailed("declare exchange %q as a durable topic exchange: %w", b.Exchange, err)
			}
		}
		if err := ch.QueueBind(c.cfg.Queue, b.Pattern, b.Exchange, false, nil); err != nil {
			return brokerFailed("bind queue %q to exchange %q with pattern %q: %w", c.cfg.Queue, b.Exchange, b.Pattern, err)
		}
	}
	return nil
}

func (c *Consumer) setConnected(connected bool) {
	if c.connected.Swap(connected) != connected {
		c.cfg.Observer.Connected(connected)
	}
}

// channelError returns the reason the channel closed, or a generic error
// when the broker gave none.
func channelError(closed <-chan *amqp.Error) error {
	select {
	case err, ok := <-closed:
		if ok && err != nil {
			return err
		}
	case <-time.After(time.Second):
	}
	return errors.New("connection lost")
}
