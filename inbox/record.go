package inbox

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
)

// pending is a parsed delivery waiting to be recorded.
type pending struct {
	tag     uint64
	message Message
}

// handleBatch records the deliveries of one batch and settles each one:
// a delivery that cannot become a row is rejected without requeue, and the
// rest are acked together once the insert has committed. An error leaves
// the recorded deliveries unacked. It ends the session, and closing the
// channel returns them to the queue.
func (c *Consumer) handleBatch(ctx context.Context, ch *amqp.Channel, batch []amqp.Delivery) error {
	redelivered := 0
	rows := make([]pending, 0, len(batch))
	for i := range batch {
		d := &batch[i]
		if d.Redelivered {
			redelivered++
		}

		m, err := Parse(*d)
		if err == nil {
			err = c.table.checkLengths(&m)
		}
		if err != nil {
			if err := c.reject(ch, d.DeliveryTag, m.ID, d.RoutingKey, err); err != nil {
				return err
			}
			continue
		}
		rows = append(rows, pending{tag: d.DeliveryTag, message: m})
	}
	c.received.Add(uint64(len(batch)))
	c.redelivered.Add(uint64(redelivered))
	c.cfg.Observer.Received(len(batch), redelivered)

	if len(rows) == 0 {
		return nil
	}

	// The insert runs to its end even when ctx is canceled, so a stop
	// does not throw away a batch that is about to commit.
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()

	inserted, bad, err := c.record(writeCtx, rows)
	if err != nil {
		if isPermanent(err) {
			return err
		}
		return postgresFailed("record %d messages in %s: %w", len(rows), c.table.display, err)
	}

	var lastTag uint64
	for i, row := range rows {
		if rowErr, ok := bad[i]; ok {
			if err := c.reject(ch, row.tag, row.message.ID, row.message.RoutingKey, rowErr); err != nil {
				return err
			}
			continue
		}
		lastTag = max(lastTag, row.tag)
	}
	good := len(rows) - len(bad)
	if good == 0 {
		return nil
	}

	// One ack settles every delivery of the batch up to lastTag. The
	// rejected ones are settled already.
	if err := ch.Ack(lastTag, true); err != nil {
		return brokerFailed("ack deliveries up to tag %d: %w", lastTag, err)
	}

	c.recorded.Add(uint64(inserted))
	c.duplicates.Add(uint64(good - inserted))
	c.cfg.Observer.Recorded(inserted)
	c.cfg.Observer.Duplicates(good - inserted)
	if good > inserted {
		c.log.Debug().Int("duplicates", good-inserted).Int("recorded", inserted).Msg("duplicates acked")
	}
	return nil
}

// reject rejects one delivery without requeue, so the queue's dead-letter
// exchange receives it, and logs why.
func (c *Consumer) reject(ch *amqp.Channel, tag uint64, messageID, routingKey string, reason error) error {
	c.log.Error().Err(reason).Uint64("delivery_tag", tag).Str("message_id", messageID).
		Str("routing_key", routingKey).Bool("rejected", true).
		Msg("message rejected without requeue; the dead-letter exchange receives it if the queue has one")
	c.rejected.Add(1)
	c.cfg.Observer.Rejected(1)

	if err := ch.Reject(tag, false); err != nil {
		return brokerFailed("reject delivery %d: %w", tag, err)
	}
	return nil
}

// record inserts rows in one statement and returns how many were new. When
// Postgres rejects the statement for the content of a row, record inserts
// the rows one by one, each under a savepoint. It returns the rejected rows
// in bad, by index with their error, and the other rows commit.
func (c *Consumer) record(ctx context.Context, rows []pending) (inserted int, bad map[int]error, err error) {
	args := make([]any, 0, 1+5*len(rows))
	args = append(args, c.cfg.Source)
	for i := range rows {
		args = c.table.appendArgs(args, &rows[i].message)
	}

	inserted, err = countRows(c.pool.Query(ctx, c.table.insertSQL(len(rows)), args...))
	if err == nil || !isRowError(err) {
		return inserted, nil, err
	}

	c.log.Warn().Err(err).Int("messages", len(rows)).Msg("Postgres rejected a row of the batch; recording the messages one by one")
	return c.recordEach(ctx, rows)
}

// recordEach inserts each row under its own savepoint in one transaction.
func (c *Consumer) recordEach(ctx context.Context, rows []pending) (inserted int, bad map[int]error, err error) {
	tx, err := c.pool.Begin(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	sql := c.table.insertSQL(1)
	bad = make(map[int]error)
	for i := range rows {
		args := c.table.appendArgs([]any{c.cfg.Source}, &rows[i].message)

		n, err := insertUnderSavepoint(ctx, tx, sql, args)
		if isRowError(err) {
			bad[i] = errors.Join(ErrInvalidMessage, err)
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		inserted += n
	}

	if err := tx.Commit(ctx); err != nil {
		return 0, nil, err
	}
	return inserted, bad, nil
}

func insertUnderSavepoint(ctx context.Context, tx pgx.Tx, sql string, args []any) (int, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}

	n, err := countRows(sp.Query(ctx, sql, args...))
	if err != nil {
		_ = sp.Rollback(ctx)
		return 0, err
	}
	return n, sp.Commit(ctx)
}

// countRows reads and counts the rows of a query and closes them.
func countRows(rows pgx.Rows, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	return n, rows.Err()
}
