package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/outbox"
)

// PollerConfig configures the polling relay that walrelay is compared with.
type PollerConfig struct {
	// PostgresURL is the database with Event-Forge's outbox_messages table.
	PostgresURL string

	// AMQPURL is the RabbitMQ broker. Default DefaultAMQPURL.
	AMQPURL string

	// Exchange is the exchange messages go to; it must exist.
	Exchange string

	// Interval is the sleep after a batch that was not full. Default 100 ms.
	Interval time.Duration

	// BatchSize is the LIMIT of each poll. Default 100.
	BatchSize int
}

// pollerAppName is the polling relay's application_name.
const pollerAppName = "walrelay-bench-poller"

// The polling relay's queries, as a classic outbox worker writes them: the
// oldest pending rows that no other worker holds, in the order of the
// table's pending index (status, scheduled_at, created_at).
const (
	pollSQL = `SELECT id::text, aggregate_type, aggregate_id, event_type, payload, metadata, created_at
		FROM ` + outboxTable + `
		WHERE status = 'pending' AND scheduled_at <= now()
		ORDER BY scheduled_at, created_at
		LIMIT $1
		FOR UPDATE SKIP LOCKED`

	markSQL = `UPDATE ` + outboxTable + ` SET status = 'published', updated_at = now() WHERE id = ANY($1::uuid[])`
)

// RunPoller relays pending outbox rows the classic way until ctx is
// cancelled: in one transaction it locks up to BatchSize pending rows,
// publishes them with confirms, marks them published and commits, and it
// sleeps Interval whenever a batch was not full. A cancelled ctx lets the
// batch in progress finish; RunPoller then publishes its backend's table
// counters (pg_stat_force_next_flush) and returns nil. Any database or
// broker failure ends it with an error.
func RunPoller(ctx context.Context, cfg PollerConfig, log zerolog.Logger) error {
	if cfg.AMQPURL == "" {
		cfg.AMQPURL = DefaultAMQPURL
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = pollBatch
	}
	if cfg.Exchange == "" {
		return fmt.Errorf("missing exchange: name the exchange the polling relay publishes to")
	}

	pgCfg, err := pgx.ParseConfig(cfg.PostgresURL)
	if err != nil {
		return fmt.Errorf("invalid Postgres URL: %v; use postgres://user@host:port/database", err)
	}
	pgCfg.RuntimeParams["application_name"] = pollerAppName

	// Plan every poll with the table's current statistics, not with a
	// generic plan cached at the first polls, when the table may have
	// looked empty.
	pgCfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"

	// The batches run to their end whatever ctx does, so a stop never
	// leaves published rows unmarked.
	work := context.WithoutCancel(ctx)
	db, err := pgx.ConnectConfig(work, pgCfg)
	if err != nil {
		return fmt.Errorf("connect to Postgres: %w", err)
	}
	defer db.Close(work)

	pub, err := dialPublisher(cfg.AMQPURL, cfg.BatchSize)
	if err != nil {
		return err
	}
	defer pub.close()

	p := &poller{cfg: cfg, db: db, pub: pub, enc: outbox.EncodeConfig{Exchange: cfg.Exchange}}
	log.Info().Dur("interval", cfg.Interval).Int("batch", cfg.BatchSize).Msg("polling relay started")

	for ctx.Err() == nil {
		n, err := p.pollOnce(work)
		if err != nil {
			return err
		}
		p.relayed += n

		if n < cfg.BatchSize {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.Interval):
			}
		}
	}

	// A PostgreSQL 15 backend publishes its table counters at most once a
	// second. pg_stat_force_next_flush makes it publish them at the end of
	// this statement, before the benchmark reads them.
	// NOTE: PostgreSQL 14 and older lack the function, and their statistics
	// collector may publish the last counters after the benchmark read them,
	// so the rows read and written per message may come out low there.
	if _, err := db.Exec(work, "SELECT pg_stat_force_next_flush()"); err != nil {
		log.Warn().Err(err).Msg("cannot flush the table counters; pg_stat_user_tables may lag")
	}

	log.Info().Int("relayed", p.relayed).Msg("polling relay stopped")
	return nil
}

type poller struct {
	cfg     PollerConfig
	db      *pgx.Conn
	pub     *confirmPublisher
	enc     outbox.EncodeConfig
	ids     []string
	relayed int
}

// pollOnce relays one batch and returns its size. On error the transaction
// is rolled back, so the rows stay pending.
func (p *poller) pollOnce(ctx context.Context) (int, error) {
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin a poll: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after Commit

	rows, err := tx.Query(ctx, pollSQL, p.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("select pending outbox rows: %w", err)
	}

	var batch []outbox.Message
	for rows.Next() {
		var m outbox.Message
		if err := rows.Scan(&m.ID, &m.AggregateType, &m.AggregateID, &m.EventType, &m.Payload, &m.Metadata, &m.CreatedAt); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read a pending outbox row: %w", err)
		}
		batch = append(batch, m)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("select pending outbox rows: %w", err)
	}
	if len(batch) == 0 {
		return 0, tx.Commit(ctx)
	}

	now := time.Now()
	p.ids = p.ids[:0]
	for i := range batch {
		msg, err := outbox.Encode(&batch[i], p.enc, now)
		if err != nil {
			return 0, fmt.Errorf("encode outbox row %s: %w", batch[i].ID, err)
		}
		if err := p.pub.publish(ctx, &msg); err != nil {
			return 0, err
		}
		p.ids = append(p.ids, batch[i].ID)
	}
	if err := p.pub.flush(ctx); err != nil {
		return 0, err
	}

	if _, err := tx.Exec(ctx, markSQL, p.ids); err != nil {
		return 0, fmt.Errorf("mark %d outbox rows published: %w", len(p.ids), err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit %d published outbox rows: %w", len(p.ids), err)
	}
	return len(batch), nil
}
