package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/walrelay/walrelay/outbox"
)

// The rows every scenario inserts: an order event with a JSON payload that
// carries the row's sequence number g and is padded with random hex digits
// to the requested size, so that TOAST compression cannot shrink it.
// payloadExpr takes the padding as the parameter named in it.
const (
	payloadExpr  = `jsonb_build_object('seq', g, 'total', 129.95, 'orderId', 'ord-' || lpad(g::text, 10, '0'), 'currency', 'EUR', 'customerId', 'cus-' || (g %% 5000), 'padding', %s::text)`
	metadataExpr = `jsonb_build_object('correlationId', 'corr-' || g)`
)

var (
	// insertSQL inserts rows $1 to $2 with padding $3.
	insertSQL = `INSERT INTO ` + outboxTable + ` (aggregate_type, aggregate_id, event_type, payload, metadata)
		SELECT 'order', 'order-' || (g % 1000), 'created', ` + fmt.Sprintf(payloadExpr, "$3") + `, ` + metadataExpr + `
		FROM generate_series($1::bigint, $2::bigint) AS g`

	// sampleSQL prints the payload and metadata of row $1 with padding $2.
	sampleSQL = `SELECT ` + fmt.Sprintf(payloadExpr, "$2") + `::text, ` + metadataExpr + `::text FROM (SELECT $1::bigint AS g) AS s`
)

// rowShape is the size of the rows a step inserts.
type rowShape struct {
	payloadBytes int
	pad          string
}

// newShape measures the payload without padding and returns the padding
// that brings it to payloadBytes (as jsonb prints it), or none when the
// payload is larger already.
func newShape(ctx context.Context, db *pgx.Conn, payloadBytes int) (rowShape, error) {
	var payload, metadata string
	if err := db.QueryRow(ctx, sampleSQL, 100000, "").Scan(&payload, &metadata); err != nil {
		return rowShape{}, fmt.Errorf("measure the payload: %w", err)
	}
	base := len(payload)

	n := max(payloadBytes-base, 0)
	raw := make([]byte, (n+1)/2)
	if _, err := rand.Read(raw); err != nil {
		return rowShape{}, fmt.Errorf("generate payload padding: %w", err)
	}

	return rowShape{payloadBytes: payloadBytes, pad: hex.EncodeToString(raw)[:n]}, nil
}

// sample returns the message the relay would read for row seq, for
// publishers that must send messages of the same shape.
func (s rowShape) sample(ctx context.Context, db *pgx.Conn, seq int64) (outbox.Message, error) {
	var payload, metadata string
	if err := db.QueryRow(ctx, sampleSQL, seq, s.pad).Scan(&payload, &metadata); err != nil {
		return outbox.Message{}, fmt.Errorf("build a sample message: %w", err)
	}

	return outbox.Message{
		ID:            "8d7f3c1e-5b2a-4f0e-9c6d-2a1b0c9d8e7f",
		AggregateType: "order",
		AggregateID:   fmt.Sprintf("order-%d", seq%1000),
		EventType:     "created",
		Payload:       []byte(payload),
		Metadata:      []byte(metadata),
		CreatedAt:     time.Now(),
	}, nil
}

// bodyBytes is the size of the broker message body for s.
func (s rowShape) bodyBytes(ctx context.Context, db *pgx.Conn, seq int64) (int, error) {
	m, err := s.sample(ctx, db, seq)
	if err != nil {
		return 0, err
	}
	return len(outbox.AppendBody(nil, &m)), nil
}

// insertOne inserts rows first to last in one transaction.
func insertOne(ctx context.Context, db *pgx.Conn, s rowShape, first, last int64) error {
	if _, err := db.Exec(ctx, insertSQL, first, last, s.pad); err != nil {
		return fmt.Errorf("insert outbox rows %d to %d: %w", first, last, err)
	}
	return nil
}

// inserters are connections that insert rows concurrently.
type inserters struct {
	conns []*pgx.Conn
}

// openInserters opens n connections to the run's database.
func (e *env) openInserters(ctx context.Context, n int) (*inserters, error) {
	ins := &inserters{}
	for range n {
		c, err := connect(ctx, e.dbURL)
		if err != nil {
			ins.close()
			return nil, err
		}
		ins.conns = append(ins.conns, c)
	}
	return ins, nil
}

func (ins *inserters) close() {
	for _, c := range ins.conns {
		_ = c.Close(context.Background())
	}
}

// insertAll inserts rows base to base+n-1 in transactions of perTx rows,
// spread over the connections. When commits is not nil, it records in
// commits[seq-base] the time each row's COMMIT returned. It returns the
// time the last COMMIT returned.
func (ins *inserters) insertAll(ctx context.Context, c clock, s rowShape, base int64, n, perTx int, commits []time.Duration) (time.Duration, error) {
	var next atomic.Int64
	var lastMu sync.Mutex
	var last time.Duration

	g, ctx := errgroup.WithContext(ctx)
	for _, conn := range ins.conns {
		g.Go(func() error {
			for {
				first := next.Add(int64(perTx)) - int64(perTx)
				if first >= int64(n) {
					return nil
				}
				end := min(first+int64(perTx), int64(n))

				if err := insertOne(ctx, conn, s, base+first, base+end-1); err != nil {
					return err
				}

				now := c.now()
				if commits != nil {
					for i := first; i < end; i++ {
						commits[i] = now
					}
				}
				lastMu.Lock()
				last = max(last, now)
				lastMu.Unlock()
			}
		})
	}

	err := g.Wait()
	return last, err
}

// insertPaced inserts rows base to base+n-1, one per transaction, at
// perSecond rows a second, and records in commits[seq-base] the time each
// COMMIT returned. When the connections cannot keep up, the rate falls
// behind the target: the returned duration is the time from the first
// insert to the last commit, so the caller can report the rate achieved.
func (ins *inserters) insertPaced(ctx context.Context, c clock, s rowShape, base int64, n, perSecond int, commits []time.Duration) (time.Duration, error) {
	jobs := make(chan int64, len(ins.conns)*4)

	g, gctx := errgroup.WithContext(ctx)
	var lastMu sync.Mutex
	var last time.Duration
	for _, conn := range ins.conns {
		g.Go(func() error {
			for i := range jobs {
				if err := insertOne(gctx, conn, s, base+i, base+i); err != nil {
					return err
				}
				now := c.now()
				commits[i] = now
				lastMu.Lock()
				last = max(last, now)
				lastMu.Unlock()
			}
			return nil
		})
	}

	// The pacer hands out every row that is due, then sleeps a millisecond.
	start := c.now()
	g.Go(func() error {
		defer close(jobs)

		sent := 0
		for sent < n {
			due := min(int(float64(c.now()-start)*float64(perSecond)/float64(time.Second))+1, n)
			for ; sent < due; sent++ {
				select {
				case jobs <- int64(sent):
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			time.Sleep(time.Millisecond)
		}
		return nil
	})

	err := g.Wait()
	return last - start, err
}
