package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/checkpoint"
	"github.com/walrelay/walrelay/decode"
	"github.com/walrelay/walrelay/migrations"
	"github.com/walrelay/walrelay/replication"
)

// healthySession is how long a session must run before a failure starts
// the backoff from its initial delay again.
const healthySession = 5 * time.Second

// Relay relays outbox inserts from one slot to the broker.
type Relay struct {
	cfg   Config
	table replication.Table
	log   zerolog.Logger

	decoder *decode.Decoder

	brokerTLS  *tls.Config
	brokerURLs []string
	brokerNext int // index into brokerURLs of the next session's broker

	// resume carries what the last session confirmed into the next one.
	resume checkpoint.Resume

	// resumeLoaded is set once the first session has taken resume from the
	// stored checkpoint.
	resumeLoaded bool

	// startLSNApplied is set once a session started at Config.StartLSN, so
	// later sessions resume normally.
	startLSNApplied bool

	// decodeTimedThrough is the commit LSN of the newest transaction whose
	// rows went to Observer.Decoded. A later session that reads the same
	// transactions again does not report them twice.
	decodeTimedThrough pglogrepl.LSN

	// streaming is closed when the first session starts streaming.
	streaming     chan struct{}
	streamingOnce sync.Once
}

// New validates cfg and returns a Relay.
func New(cfg Config, log zerolog.Logger) (*Relay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}

	if _, err := pgconn.ParseConfig(cfg.PostgresURL); err != nil {
		return nil, fmt.Errorf("invalid Postgres URL: %w", err)
	}

	table, err := replication.ParseTable(cfg.Table)
	if err != nil {
		return nil, err
	}

	tlsCfg, err := brokerTLS(cfg)
	if err != nil {
		return nil, err
	}

	decoder := decode.New(decode.Config{
		Schema:        table.Schema,
		Table:         table.Name,
		Columns:       cfg.Columns,
		MessagePrefix: cfg.MessagePrefix,
	})

	return &Relay{
		cfg:        cfg,
		table:      table,
		log:        log.With().Str("slot", cfg.Slot).Logger(),
		decoder:    decoder,
		brokerTLS:  tlsCfg,
		brokerURLs: append([]string{cfg.AMQPURL}, cfg.AMQPURLs...),
		streaming:  make(chan struct{}),
	}, nil
}

// Streaming returns a channel that is closed once the relay has started
// streaming from its slot: every transaction committed after that is
// relayed.
func (r *Relay) Streaming() <-chan struct{} {
	return r.streaming
}

// Run relays until ctx is canceled or a permanent error occurs. On cancel it
// stops reading, waits up to ShutdownTimeout for outstanding confirms,
// reports the final flush position and returns nil. A failure of Postgres,
// the broker or the network starts a new session after an exponential
// backoff with jitter. Errors that a retry cannot fix are returned.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.setup(ctx); err != nil {
		if ctx.Err() != nil {
			r.log.Info().Msg("relay stopped during setup")
			return nil
		}
		return err
	}

	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval = r.cfg.RetryInitial
	retry.MaxInterval = r.cfg.RetryMax
	retry.MaxElapsedTime = 0
	retry.Reset()

	attempt := 0
	for {
		started := time.Now()
		err := r.session(ctx, attempt > 0)
		if ctx.Err() != nil {
			r.log.Info().Str("lsn", r.resume.Flushed.LSN.String()).Msg("relay stopped")
			return nil
		}
		if isPermanent(err) {
			return err
		}

		// The next session tries the next broker, such as another node of
		// a cluster.
		r.brokerNext = (r.brokerNext + 1) % len(r.brokerURLs)

		if time.Since(started) > healthySession {
			retry.Reset()
			attempt = 0
		}
		attempt++
		delay := retry.NextBackOff()
		r.log.Warn().Err(err).Int("attempt", attempt).Stringer("delay", delay).
			Str("lsn", r.resume.Flushed.LSN.String()).Msg("relay session failed; retrying")

		select {
		case <-ctx.Done():
			r.log.Info().Str("lsn", r.resume.Flushed.LSN.String()).Msg("relay stopped")
			return nil
		case <-time.After(delay):
		}
	}
}

// setup checks the server and creates what the relay needs: its checkpoint
// table, the publication and the slot. Connection failures are retried with
// backoff, so the relay can start before Postgres does.
func (r *Relay) setup(ctx context.Context) error {
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval = r.cfg.RetryInitial
	retry.MaxInterval = r.cfg.RetryMax
	retry.MaxElapsedTime = 0

	attempt := 0
	op := func() error {
		attempt++
		err := r.setupOnce(ctx)
		if err == nil || isPermanent(err) {
			return backoff.Permanent(err)
		}
		// A backfill publishes during setup: the next attempt tries the
		// next broker.
		r.brokerNext = (r.brokerNext + 1) % len(r.brokerURLs)
		return err
	}
	notify := func(err error, delay time.Duration) {
		r.log.Warn().Err(err).Int("attempt", attempt).Stringer("delay", delay).Msg("setup failed; retrying")
	}

	err := backoff.RetryNotify(op, backoff.WithContext(retry, ctx), notify)
	var perm *backoff.PermanentError
	if errors.As(err, &perm) {
		err = perm.Err
	}
	if err != nil && ctx.Err() == nil {
		return permanent(err)
	}

	return ctx.Err()
}

func (r *Relay) setupOnce(ctx context.Context) error {
	db, err := r.connectPostgres(ctx)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))

	info, err := replication.CheckServer(ctx, db)
	if err != nil {
		return permanent(err)
	}

	if err := r.ensureCheckpointTable(ctx, db); err != nil {
		return err
	}

	pub, err := replication.EnsurePublication(ctx, db, r.cfg.Publication, r.table, !r.cfg.NoCreate)
	if err != nil {
		return permanent(err)
	}
	if pub.Created {
		r.log.Info().Str("publication", r.cfg.Publication).Str("table", r.table.String()).Msg("created publication")
	}

	if err := r.checkMaintenanceColumns(ctx, db); err != nil {
		return err
	}

	if err := r.ensureSlot(ctx, db, info); err != nil {
		return err
	}

	r.log.Info().Str("server_version", info.Version).Str("database", info.Database).
		Str("publication", r.cfg.Publication).Str("table", r.table.String()).
		Str("exchange", r.cfg.Exchange).Int("max_in_flight", r.cfg.MaxInFlight).
		Msg("server checked")

	return nil
}

// connectPostgres opens an ordinary connection with TimeZone=UTC, so that
// timestamps without time zone read the same as in the replication stream.
func (r *Relay) connectPostgres(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.cfg.PostgresURL)
	if err != nil {
		return nil, permanent(fmt.Errorf("invalid Postgres URL: %w", err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	cfg.RuntimeParams["TimeZone"] = "UTC"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "walrelay"
	}

	db, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres: %w", err)
	}

	return db, nil
}

// ensureCheckpointTable applies walrelay's own migrations, or with NoCreate
// only checks that they were applied, as walrelay setup does.
func (r *Relay) ensureCheckpointTable(ctx context.Context, db *pgx.Conn) error {
	if !r.cfg.NoCreate {
		if _, err := migrations.Up(ctx, r.cfg.PostgresURL, r.log, migrations.SetWalrelay); err != nil {
			return permanent(fmt.Errorf("create walrelay's checkpoint table: %w", err))
		}
		return nil
	}

	var exists bool
	if err := db.QueryRow(ctx, `SELECT to_regclass('walrelay_checkpoints') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("look up walrelay's checkpoint table: %w", err)
	}
	if !exists {
		return permanent(fmt.Errorf("walrelay's checkpoint table walrelay_checkpoints does not exist and creating it is disabled: run walrelay setup"))
	}

	return nil
}
