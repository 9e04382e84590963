package sink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/outbox"
)

// Config configures a Publisher. The zero value of every field except
// DeclareExchange means its default.
type Config struct {
	// URL is the AMQP URL. Default: amqp://guest:guest@localhost:5672/.
	URL string

	// Exchange is the default exchange, declared as a durable topic exchange
	// when DeclareExchange is set. Default: "events".
	Exchange string

	// DeclareExchange makes Dial declare Exchange and DelayedExchange. Dial
	// takes the field as given, so its zero value (false) means that the
	// exchanges must already exist. Callers that want the declaration must
	// set it to true.
	DeclareExchange bool

	// DelayedExchange is the exchange for delayed messages, declared with
	// type x-delayed-message and argument x-delayed-type=topic when
	// DeclareExchange is set. That type needs the RabbitMQ plugin
	// rabbitmq_delayed_message_exchange. Empty means none.
	DelayedExchange string

	// DialTimeout bounds the TCP connect plus the AMQP handshake, and the
	// close handshake in Close. Default: 10s.
	DialTimeout time.Duration

	// Heartbeat is the AMQP heartbeat interval. Default: 10s.
	Heartbeat time.Duration

	// ConnectionName is the client-provided connection name that the
	// RabbitMQ management UI shows. Default: "walrelay".
	ConnectionName string

	// DeadLetterExchange is declared as a durable topic exchange like
	// Exchange when set and DeclareExchange is set.
	DeadLetterExchange string

	// TLS configures TLS for amqps:// URLs; nil means the system roots and
	// no client certificate.
	TLS *tls.Config

	// ConfirmBuffer is the capacity of the confirmation channels, in
	// messages. Default: 10000. Set it to at least the caller's in-flight
	// window (messages published but not yet read from Confirmations).
	ConfirmBuffer int
}

const (
	defaultURL           = "amqp://guest:guest@localhost:5672/"
	defaultTimeout       = 10 * time.Second
	defaultConfirmBuffer = 10000
	defaultConnName      = "walrelay"
)

func (c Config) withDefaults() Config {
	if c.URL == "" {
		c.URL = defaultURL
	}
	if c.Exchange == "" {
		c.Exchange = outbox.DefaultExchange
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = defaultTimeout
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = defaultTimeout
	}
	if c.ConnectionName == "" {
		c.ConnectionName = defaultConnName
	}
	if c.ConfirmBuffer <= 0 {
		c.ConfirmBuffer = defaultConfirmBuffer
	}
	return c
}

// Publisher publishes messages on one AMQP channel in confirm mode and
// reports the broker's outcome of each one on Confirmations.
type Publisher struct {
	cfg  Config
	log  zerolog.Logger
	conn *amqp.Connection
	ch   *amqp.Channel

	// publishMu keeps the delivery tag read and the publish together.
	publishMu sync.Mutex
	tracker   *tracker

	confirmations chan Confirmation
	gate          flowGate

	done     chan struct{}
	doneOnce sync.Once
	errMu    sync.Mutex
	err      error

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	connOnce  sync.Once

	// socket is the connection's TCP socket, corked by Cork, and closed
	// directly when the broker blocks the connection and so would not read
	// a close request.
	socket *corkConn
	wg     sync.WaitGroup
}

// Dial connects to the broker, opens one channel in confirm mode, declares
// the exchanges when cfg.DeclareExchange is set, and starts the goroutine
// that turns broker confirmations into Confirmations. Cancelling ctx aborts
// the connect and the setup, but has no effect on the returned Publisher.
func Dial(ctx context.Context, cfg Config, log zerolog.Logger) (*Publisher, error) {
	cfg = cfg.withDefaults()
	target := redactURL(cfg.URL)
	if err := checkURL(cfg.URL); err != nil {
		return nil, err
	}

	conn, socket, err := dial(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to RabbitMQ at %s: %w", target, err)
	}

	// From here on a cancelled ctx closes the connection, which makes the
	// pending setup call fail.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	p, err := setup(conn, cfg, log)
	if !stop() {
		_ = conn.Close()
		return nil, fmt.Errorf("set up RabbitMQ publisher at %s: %w", target, context.Cause(ctx))
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("set up RabbitMQ publisher at %s: %w", target, err)
	}

	p.socket = socket
	log.Info().Str("url", target).Str("exchange", cfg.Exchange).Str("delayed_exchange", cfg.DelayedExchange).
		Bool("declare_exchange", cfg.DeclareExchange).Msg("connected to RabbitMQ")
	return p, nil
}

// dial opens the AMQP connection and returns it with its TCP socket. A
// cancelled ctx closes the socket, which ends a handshake in progress.
func dial(ctx context.Context, cfg Config) (*amqp.Connection, *corkConn, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName)

	var (
		stopCancel func() bool
		socket     *corkConn
	)
	amqpCfg := amqp.Config{
		Heartbeat:       cfg.Heartbeat,
		Properties:      props,
		TLSClientConfig: cfg.TLS,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: cfg.DialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}

			// amqp091 clears the deadline once the handshake is done.
			if err := c.SetDeadline(time.Now().Add(cfg.DialTimeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			stopCancel = context.AfterFunc(ctx, func() { _ = c.Close() })
			socket = &corkConn{Conn: c}
			return socket, nil
		},
	}

	conn, err := amqp.DialConfig(cfg.URL, amqpCfg)
	if stopCancel != nil && !stopCancel() {
		if conn != nil {
			_ = conn.Close()
		}
		return nil, nil, context.Cause(ctx)
	}
	return conn, socket, err
}

func setup(conn *amqp.Connection, cfg Config, log zerolog.Logger) (*Publisher, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}

	if cfg.DeclareExchange {
		if err := ch.ExchangeDeclare(cfg.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return nil, declareError(cfg.Exchange, "a durable topic exchange", err)
		}
		if cfg.DeadLetterExchange != "" {
			if err := ch.ExchangeDeclare(cfg.DeadLetterExchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
				return nil, declareError(cfg.DeadLetterExchange, "a durable topic exchange", err)
			}
		}
		if cfg.DelayedExchange != "" {
			args := amqp.Table{"x-delayed-type": amqp.ExchangeTopic}
			if err := ch.ExchangeDeclare(cfg.DelayedExchange, "x-delayed-message", true, false, false, false, args); err != nil {
				return nil, declareError(cfg.DelayedExchange, "a durable x-delayed-message exchange", err)
			}
		}
	}

	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("put channel in confirm mode: %w", err)
	}

	p := &Publisher{
		cfg:           cfg,
		log:           log,
		conn:          conn,
		ch:            ch,
		tracker:       newTracker(),
		confirmations: make(chan Confirmation, cfg.ConfirmBuffer),
		done:          make(chan struct{}),
		closing:       make(chan struct{}),
	}

	// Every listener is buffered and run keeps reading each one, so the
	// amqp091 reader goroutine does not wait for the caller.
	n := notifications{
		confirms:  ch.NotifyPublish(make(chan amqp.Confirmation, cfg.ConfirmBuffer)),
		returns:   ch.NotifyReturn(make(chan amqp.Return, cfg.ConfirmBuffer)),
		connClose: conn.NotifyClose(make(chan *amqp.Error, 1)),
		chanClose: ch.NotifyClose(make(chan *amqp.Error, 1)),
		blocked:   conn.NotifyBlocked(make(chan amqp.Blocking, 16)),
	}

	p.wg.Add(1)
	go p.run(n)
	return p, nil
}

// declareError explains a failed exchange declaration.
func declareError(name, kind string, err error) error {
	switch amqpCode(err) {
	case amqp.PreconditionFailed:
		return fmt.Errorf("declare exchange %q as %s: %w; the exchange exists with another type or other arguments: delete it, or set DeclareExchange to false to use it as it is", name, kind, err)
	case amqp.CommandInvalid:
		if strings.Contains(kind, "x-delayed-message") {
			return fmt.Errorf("declare exchange %q as %s: %w; enable the RabbitMQ plugin with `rabbitmq-plugins enable rabbitmq_delayed_message_exchange`, or leave DelayedExchange empty", name, kind, err)
		}
	}
	return fmt.Errorf("declare exchange %q as %s: %w", name, kind, err)
}

// Publish sends m with delivery mode 2 (persistent) and the mandatory flag,
// so that an unroutable message comes back as Returned. Messages with
// m.Delayed set go out without the mandatory flag (see below). seq is the
// caller's sequence number, reported back in m's Confirmation.
//
// Confirmations follow the order of Publish calls. Calls are serialized, but
// the caller should publish from one goroutine so that this order is the
// order it means.
//
// Before sending, Publish waits while the broker blocks the connection
// (connection.blocked), until ctx is done or the connection closes. On error
// the message gets no Confirmation. Errors that mean the connection or
// channel is gone wrap ErrClosed; a done ctx returns ctx's error.
//
// NOTE: ctx cannot interrupt a write that is already under way when the
// broker stops reading the socket. Such a write returns when the broker
// reads again or the connection closes, and Close bounds that by
// DialTimeout.
func (p *Publisher) Publish(ctx context.Context, seq uint64, m outbox.Publishing) error {
	select {
	case <-p.done:
		return fmt.Errorf("publish message %q: %w", m.MessageID, p.Err())
	default:
	}

	if wait := p.gate.wait(); wait != nil {
		// Nothing may sit in the cork while this waits for the broker.
		if err := p.Uncork(); err != nil {
			return fmt.Errorf("publish message %q: %w: %w", m.MessageID, ErrClosed, err)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("publish message %q while the broker blocks publishing: %w", m.MessageID, ctx.Err())
		case <-p.done:
			return fmt.Errorf("publish message %q: %w", m.MessageID, p.Err())
		}
	}

	msg := amqp.Publishing{
		Headers:       amqp.Table(m.Headers),
		ContentType:   m.ContentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: m.CorrelationID,
		MessageId:     m.MessageID,
		Timestamp:     m.Timestamp,
		Type:          m.Type,
		Body:          m.Body,
	}

	// The x-delayed-message exchange routes a message only when its delay
	// has passed. At publish time every message looks unroutable, so a
	// mandatory one always comes back with 312 NO_ROUTE although it is
	// delivered later, as users of the plugin rabbitmq_delayed_message_exchange
	// have reported since 2015. Delayed messages are therefore published
	// without the mandatory flag, and an unroutable one is dropped unreported.
	mandatory := !m.Delayed

	p.publishMu.Lock()
	defer p.publishMu.Unlock()

	tag := p.ch.GetNextPublishSeqNo()
	p.tracker.push(inFlight{tag: tag, seq: seq, messageID: m.MessageID, exchange: m.Exchange, routingKey: m.RoutingKey})

	err := p.ch.PublishWithContext(ctx, m.Exchange, m.RoutingKey, mandatory, false, msg)
	if err == nil {
		return nil
	}
	p.tracker.dropBack(tag)

	switch {
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return fmt.Errorf("publish message %q: %w", m.MessageID, err)
	case errors.Is(err, amqp.ErrClosed) || p.ch.IsClosed() || p.conn.IsClosed():
		return fmt.Errorf("publish message %q to exchange %q: %w: %w", m.MessageID, m.Exchange, ErrClosed, err)
	}
	return fmt.Errorf("publish message %q to exchange %q: %w", m.MessageID, m.Exchange, err)
}

// Confirmations returns the channel of outcomes, one per successful Publish,
// in publish order. It is closed after the connection or channel closes,
// once every outcome the broker sent has been delivered. A message published
// but not confirmed before the close gets no Confirmation; treat it as
// unconfirmed. After Close, outcomes not yet read are dropped.
func (p *Publisher) Confirmations() <-chan Confirmation { return p.confirmations }

// Done returns a channel that is closed when the connection or channel is
// gone, or Close was called.
func (p *Publisher) Done() <-chan struct{} { return p.done }

// Err returns why Done was closed, an error wrapping ErrClosed (a
// *CloseError carries the AMQP reply code and text), or nil before that.
func (p *Publisher) Err() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}

// Blocked reports whether the broker is blocking publishers on this
// connection (connection.blocked, raised by a memory or disk alarm).
func (p *Publisher) Blocked() bool { return p.gate.wait() != nil }

// Close closes the connection and waits for the publisher's goroutines. It
// is safe to call more than once and from any goroutine, and later calls
// return the first call's result. The close handshake is bounded by DialTimeout.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		blocked := p.Blocked()
		p.fail(errClosedByCaller)
		close(p.closing)
		if blocked && p.socket != nil {
			_ = p.socket.Close()
		}
		if err := p.closeConnection(); err != nil {
			p.closeErr = fmt.Errorf("close RabbitMQ connection: %w", err)
		}
	})
	p.wg.Wait()
	return p.closeErr
}

// fail records the first reason the publisher stopped and closes Done.
func (p *Publisher) fail(err error) {
	p.errMu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.errMu.Unlock()
	p.doneOnce.Do(func() { close(p.done) })
}

// closeConnection closes the connection once. An already closed connection
// is not an error. conn is nil only in unit tests of run.
func (p *Publisher) closeConnection() error {
	if p.conn == nil {
		return nil
	}
	var err error
	p.connOnce.Do(func() {
		err = p.conn.CloseDeadline(time.Now().Add(p.cfg.DialTimeout))
		if errors.Is(err, amqp.ErrClosed) {
			err = nil
		}
	})
	return err
}

// closeConnectionAsync closes the connection from a new goroutine, for
// callers that must keep reading amqp091's listener channels meanwhile.
func (p *Publisher) closeConnectionAsync() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = p.closeConnection()
	}()
}

func (p *Publisher) setBlocked(b amqp.Blocking) {
	p.gate.set(b.Active)
	if b.Active {
		p.log.Warn().Str("reason", b.Reason).Msg("RabbitMQ blocked publishing on this connection (connection.blocked), so Publish waits until it is unblocked")
		return
	}
	p.log.Info().Msg("RabbitMQ unblocked publishing on this connection")
}

// flowGate is open unless the broker blocks the connection. While blocked,
// wait returns a channel that is closed when the block ends.
type flowGate struct {
	mu        sync.Mutex
	unblocked chan struct{}
}

func (g *flowGate) set(blocked bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case blocked && g.unblocked == nil:
		g.unblocked = make(chan struct{})
	case !blocked && g.unblocked != nil:
		close(g.unblocked)
		g.unblocked = nil
	}
}

// wait returns nil while the gate is open.
func (g *flowGate) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.unblocked == nil {
		return nil
	}
	return g.unblocked
}

// checkURL rejects a URL that does not parse. amqp091 would report the same
// failure with the URL, password included, in the error text.
func checkURL(rawURL string) error {
	_, err := url.Parse(rawURL)
	if err == nil {
		return nil
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	return fmt.Errorf("invalid AMQP URL in Config.URL (not shown, because it may contain a password): %v; percent-encode reserved characters in the user name and password", err)
}

// redactURL returns rawURL with its password replaced by "xxxxx", or a
// placeholder when rawURL does not parse, so that logs and errors never show
// a password.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable AMQP URL>"
	}
	return u.Redacted()
}

// Cork makes the following publishes collect in memory until Uncork, which
// sends them with one write. Callers cork around a burst of publishes and
// must uncork before they wait for anything else, because a corked
// connection sends nothing, heartbeats included.
func (p *Publisher) Cork() {
	if p.socket != nil {
		p.socket.Cork()
	}
}

// Uncork sends what Cork collected. A failed write means the connection
// is broken; amqp091 notices it too and closes the publisher.
func (p *Publisher) Uncork() error {
	if p.socket == nil {
		return nil
	}
	return p.socket.Uncork()
}
