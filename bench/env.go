package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/walrelay/walrelay/migrations"
)

// benchAppName is the application_name of the benchmark's own Postgres
// connections, so that CPU and table counters leave them out.
const benchAppName = "walrelay-bench"

// outboxTable is the Event-Forge outbox table that migrations.Up creates.
const outboxTable = "public.outbox_messages"

// publication is the publication every relay of a run streams.
const publication = "walrelay_bench"

// env is one run's database, exchange and queue, and the connections the
// benchmark itself uses to manage them.
type env struct {
	log zerolog.Logger

	id       string // run id: lowercase hex
	adminURL string
	database string
	dbURL    string
	amqpURL  string
	exchange string
	queue    string
	slotSeq  int

	db   *pgx.Conn        // the benchmark's connection to the run's database
	amqp *amqp.Connection // for consumers and queue management
	mgmt *amqp.Channel    // purges the queue

	// declared is set once the exchange and queue may exist, and created
	// once the database may exist.
	declared bool
	created  bool
}

// newEnv creates the run's database with the Event-Forge tables and a
// publication of the outbox's inserts, and a durable topic exchange with a
// durable queue bound to it. On error it removes what it created.
func newEnv(ctx context.Context, adminURL, amqpURL string, log zerolog.Logger) (e *env, err error) {
	idBytes := make([]byte, 4)
	if _, err := rand.Read(idBytes); err != nil {
		return nil, fmt.Errorf("generate run id: %w", err)
	}
	id := hex.EncodeToString(idBytes)

	e = &env{
		log:      log,
		id:       id,
		adminURL: adminURL,
		database: "walrelay_bench_" + id,
		amqpURL:  amqpURL,
		exchange: "walrelay_bench_" + id,
		queue:    "walrelay_bench_" + id,
	}
	e.dbURL, err = withDatabase(adminURL, e.database)
	if err != nil {
		return nil, err
	}

	defer func() {
		if err != nil {
			e.close()
		}
	}()

	if err := e.createDatabase(ctx); err != nil {
		return e, err
	}
	if err := e.createBroker(); err != nil {
		return e, err
	}

	return e, nil
}

func (e *env) createDatabase(ctx context.Context) error {
	admin, err := connect(ctx, e.adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(context.WithoutCancel(ctx))

	var level string
	if err := admin.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("wal_level is %q: walrelay needs logical; run scripts/services.sh (make services) or set wal_level = logical and restart Postgres", level)
	}

	e.created = true
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{e.database}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", e.database, err)
	}

	if _, err := migrations.Up(ctx, e.dbURL, e.log.Level(zerolog.WarnLevel), migrations.SetEventForge); err != nil {
		return fmt.Errorf("create the outbox table in %s: %w", e.database, err)
	}

	e.db, err = connect(ctx, e.dbURL)
	if err != nil {
		return err
	}

	_, err = e.db.Exec(ctx, "CREATE PUBLICATION "+publication+" FOR TABLE "+outboxTable+" WITH (publish = 'insert')")
	if err != nil {
		return fmt.Errorf("create publication %s: %w", publication, err)
	}

	return nil
}

func (e *env) createBroker() error {
	conn, err := amqp.Dial(e.amqpURL)
	if err != nil {
		return fmt.Errorf("connect to RabbitMQ: %w", err)
	}
	e.amqp = conn

	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open RabbitMQ channel: %w", err)
	}
	e.mgmt = ch

	e.declared = true
	if err := ch.ExchangeDeclare(e.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", e.exchange, err)
	}
	if _, err := ch.QueueDeclare(e.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", e.queue, err)
	}
	if err := ch.QueueBind(e.queue, "#", e.exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s to exchange %s: %w", e.queue, e.exchange, err)
	}

	return nil
}

// close drops the run's slots and database and deletes its exchange and
// queue. It logs what it cannot remove, with the name, so that it can be
// removed by hand.
func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if e.db != nil {
		_ = e.db.Close(ctx)
	}
	if e.created {
		if err := e.dropDatabase(ctx); err != nil {
			e.log.Error().Err(err).Str("database", e.database).Msg("cannot remove the benchmark database; drop its replication slots and the database by hand")
		}
	}

	if e.amqp != nil {
		_ = e.amqp.Close()
	}
	if !e.declared {
		return
	}
	if err := e.deleteBrokerObjects(); err != nil {
		e.log.Error().Err(err).Str("queue", e.queue).Str("exchange", e.exchange).
			Msg("cannot delete the benchmark queue and exchange; delete them by hand")
	}
}

// deleteBrokerObjects deletes the run's queue and exchange on a connection
// of its own, since the run's connection may have died with a broker
// restart. It retries for up to 30 s while the broker is unreachable.
func (e *env) deleteBrokerObjects() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.deleteBrokerObjectsOnce()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
}

func (e *env) deleteBrokerObjectsOnce() error {
	conn, err := amqp.Dial(e.amqpURL)
	if err != nil {
		return fmt.Errorf("connect to RabbitMQ: %w", err)
	}
	defer conn.Close()

	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open RabbitMQ channel: %w", err)
	}
	if _, err := ch.QueueDelete(e.queue, false, false, false); err != nil {
		return fmt.Errorf("delete queue %s: %w", e.queue, err)
	}
	if err := ch.ExchangeDelete(e.exchange, false, false); err != nil {
		return fmt.Errorf("delete exchange %s: %w", e.exchange, err)
	}
	return nil
}

// dropDatabase drops every replication slot of the run's database, then the
// database. A slot held by a walsender that is still shutting down is
// retried for up to 30 s.
func (e *env) dropDatabase(ctx context.Context) error {
	admin, err := connect(ctx, e.adminURL)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)

	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := dropSlots(ctx, admin, "database = $1", e.database)
		if err == nil && left == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop the replication slots of database %s (%d left): %v", e.database, left, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{e.database}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", e.database, err)
	}
	return nil
}

// dropSlots terminates the walsenders of the slots that match where, drops
// the inactive ones and returns how many are left.
func dropSlots(ctx context.Context, db *pgx.Conn, where string, arg any) (int, error) {
	_, err := db.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active_pid IS NOT NULL AND "+where, arg)
	if err != nil {
		return -1, fmt.Errorf("stop the walsenders of the benchmark's slots: %w", err)
	}
	_, err = db.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active AND "+where, arg)
	if err != nil {
		return -1, fmt.Errorf("drop the benchmark's slots: %w", err)
	}

	var left int
	err = db.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE "+where, arg).Scan(&left)
	if err != nil {
		return -1, fmt.Errorf("count the benchmark's slots: %w", err)
	}
	return left, nil
}

// newSlot returns an unused slot name for the next relay of the run.
func (e *env) newSlot() string {
	e.slotSeq++
	return fmt.Sprintf("walrelay_bench_%s_%d", e.id, e.slotSeq)
}

// dropSlot drops the slot called name, waiting up to 30 s for a walsender
// that still holds it to exit.
func (e *env) dropSlot(ctx context.Context, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, err := dropSlots(ctx, e.db, "slot_name = $1", name)
		if err == nil && left == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("drop replication slot %s (%d left): %v", name, left, errors.Join(err, ctx.Err()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reset empties the outbox table and the queue, and writes a checkpoint so
// that the next step does not pay for the previous one's dirty pages.
func (e *env) reset(ctx context.Context) error {
	if _, err := e.db.Exec(ctx, "TRUNCATE "+outboxTable); err != nil {
		return fmt.Errorf("empty %s: %w", outboxTable, err)
	}
	if _, err := e.mgmt.QueuePurge(e.queue, false); err != nil {
		return fmt.Errorf("purge queue %s: %w", e.queue, err)
	}
	if _, err := e.db.Exec(ctx, "CHECKPOINT"); err != nil {
		e.log.Debug().Err(err).Msg("cannot run CHECKPOINT before the step; measuring anyway")
	}
	return nil
}

// analyze updates the outbox table's planner statistics, as autovacuum
// does for a table in steady use. Without them, right after the reset, the
// planner expects a handful of pending rows and makes every poll read all
// of them.
func (e *env) analyze(ctx context.Context) error {
	if _, err := e.db.Exec(ctx, "ANALYZE "+outboxTable); err != nil {
		return fmt.Errorf("analyze %s: %w", outboxTable, err)
	}
	return nil
}

// tableCounts are the outbox table's cumulative row counters.
type tableCounts struct {
	read    int64 // seq_tup_read + idx_tup_fetch
	written int64 // n_tup_upd + n_tup_del
}

// counts reads the outbox table's counters from pg_stat_user_tables.
// PostgreSQL 15 backends publish their counters at the end of a
// transaction at most once a second, so the polling relay forces a last
// publication before it exits, and its counters are read after that.
func (e *env) counts(ctx context.Context) (tableCounts, error) {
	var c tableCounts
	err := e.db.QueryRow(ctx, `
		SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0), n_tup_upd + n_tup_del
		FROM pg_stat_user_tables WHERE relid = $1::regclass`, outboxTable).Scan(&c.read, &c.written)
	if err != nil {
		return c, fmt.Errorf("read the counters of %s from pg_stat_user_tables: %w", outboxTable, err)
	}
	return c, nil
}

// perMessage divides the counters' growth from before to after by n.
func perMessage(before, after tableCounts, n int) (read, written float64) {
	if n == 0 {
		return 0, 0
	}
	return float64(after.read-before.read) / float64(n), float64(after.written-before.written) / float64(n)
}

// connect opens a Postgres connection named benchAppName.
func connect(ctx context.Context, pgURL string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(pgURL)
	if err != nil {
		return nil, fmt.Errorf("invalid Postgres URL: %v; use postgres://user@host:port/database", err)
	}
	cfg.RuntimeParams["application_name"] = benchAppName

	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres database %q on %s: %w", cfg.Database, cfg.Host, err)
	}
	return conn, nil
}

// withDatabase returns pgURL pointed at database instead of its own.
func withDatabase(pgURL, database string) (string, error) {
	if strings.HasPrefix(pgURL, "postgres://") || strings.HasPrefix(pgURL, "postgresql://") {
		u, err := url.Parse(pgURL)
		if err != nil {
			return "", fmt.Errorf("invalid Postgres URL: %v; use postgres://user@host:port/database", err)
		}
		u.Path = "/" + database
		u.RawPath = ""
		return u.String(), nil
	}

	// key=value form: a later keyword wins over an earlier one.
	return strings.TrimSpace(pgURL) + " dbname=" + database, nil
}
