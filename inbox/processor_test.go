package inbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newProcessor creates the inbox table in shape s, a side table the
// handlers write to, and a Processor with fast retries.
func newProcessor(t *testing.T, s shape) (*Processor, *pgxpool.Pool) {
	t.Helper()

	pgURL := newDatabase(t, s)
	pool := newPool(t, pgURL)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE effects (message_id text NOT NULL, n int NOT NULL)`); err != nil {
		t.Fatalf("create effects table: %v", err)
	}

	p, err := NewProcessor(context.Background(), pool, ProcessorConfig{
		Source:    "billing",
		RetryBase: 20 * time.Millisecond,
		RetryMax:  100 * time.Millisecond,
	}, testLogger(t))
	if err != nil {
		t.Fatalf("NewProcessor: %v", err)
	}
	return p, pool
}

// recordEffect is a handler that writes one row to the side table.
func recordEffect(calls *atomic.Int32) Handler {
	return func(ctx context.Context, tx pgx.Tx, m Message) error {
		calls.Add(1)
		_, err := tx.Exec(ctx, `INSERT INTO effects (message_id, n) VALUES ($1, 1)`, m.ID)
		return err
	}
}

// failingEffect writes to the side table and then fails, so the write must
// roll back.
func failingEffect(calls *atomic.Int32, err error) Handler {
	return func(ctx context.Context, tx pgx.Tx, m Message) error {
		calls.Add(1)
		if _, execErr := tx.Exec(ctx, `INSERT INTO effects (message_id, n) VALUES ($1, -1)`, m.ID); execErr != nil {
			return execErr
		}
		return err
	}
}

func testMessage(id string) Message {
	return Message{ID: id, EventType: "invoice.paid", Payload: []byte(`{"amount":10}`), Metadata: []byte(`{"trace":"t"}`)}
}

func TestProcessRunsHandlerOnce(t *testing.T) {
	for _, s := range shapes {
		t.Run(string(s), func(t *testing.T) {
			p, pool := newProcessor(t, s)
			ctx := context.Background()
			var calls atomic.Int32

			first, err := p.Process(ctx, testMessage("m-1"), recordEffect(&calls))
			if err != nil {
				t.Fatalf("first Process: %v", err)
			}
			if first.Outcome != Processed {
				t.Errorf("first outcome = %s, want processed", first.Outcome)
			}

			second, err := p.Process(ctx, testMessage("m-1"), recordEffect(&calls))
			if err != nil {
				t.Fatalf("second Process: %v", err)
			}
			if second.Outcome != Duplicate {
				t.Errorf("second outcome = %s, want duplicate", second.Outcome)
			}

			if got := calls.Load(); got != 1 {
				t.Errorf("handler calls = %d, want 1", got)
			}
			if n := queryInt(t, pool, `SELECT count(*) FROM effects WHERE message_id = 'm-1'`); n != 1 {
				t.Errorf("effect rows = %d, want 1", n)
			}
			if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages
				WHERE message_id = 'm-1' AND source = 'billing' AND status = 'processed' AND processed_at IS NOT NULL`); n != 1 {
				t.Errorf("processed inbox rows = %d, want 1", n)
			}
		})
	}
}

func TestProcessConcurrentDeliveries(t *testing.T) {
	p, pool := newProcessor(t, typescriptShape)
	var calls atomic.Int32

	// The same message delivered to 8 workers at once: the row lock lets
	// one handler run, and the others see it processed.
	outcomes := make(chan Outcome, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.Process(context.Background(), testMessage("m-race"), recordEffect(&calls))
			if err != nil {
				t.Errorf("Process: %v", err)
			}
			outcomes <- res.Outcome
		}()
	}
	wg.Wait()
	close(outcomes)

	counts := map[Outcome]int{}
	for o := range outcomes {
		counts[o]++
	}
	if counts[Processed] != 1 || counts[Duplicate] != 7 {
		t.Errorf("outcomes = %v, want 1 processed and 7 duplicates", counts)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("handler calls = %d, want 1", got)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM effects`); n != 1 {
		t.Errorf("effect rows = %d, want 1", n)
	}
}

func TestProcessStoresRetrySchedule(t *testing.T) {
	p, pool := newProcessor(t, typescriptShape)
	ctx := context.Background()
	var calls atomic.Int32
	handlerErr := errors.New("downstream unavailable")

	res, err := p.Process(ctx, testMessage("m-retry"), failingEffect(&calls, handlerErr))
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if res.Outcome != RetryScheduled || res.Attempts != 1 || !errors.Is(res.Err, handlerErr) {
		t.Fatalf("result = %+v, want a scheduled retry after 1 attempt with the handler error", res)
	}
	if !res.RetryAt.After(time.Now().Add(-time.Second)) {
		t.Errorf("RetryAt = %s, want about now + 20ms", res.RetryAt)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM effects`); n != 0 {
		t.Errorf("effect rows after a failed handler = %d, want 0", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE message_id = 'm-retry' AND status = 'failed'
		AND retry_count = 1 AND max_retries = 3 AND scheduled_at IS NOT NULL AND error_message = 'downstream unavailable'`); n != 1 {
		t.Errorf("inbox rows with the stored failure = %d, want 1", n)
	}

	// The retries come from ProcessDue once due; each fails, and the third
	// attempt is the last.
	for attempt := 2; attempt <= 3; attempt++ {
		waitFor(t, 5*time.Second, "the retry to fall due", func() bool {
			return queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE scheduled_at <= now()`) == 1
		})
		ran, err := p.ProcessDue(ctx, failingEffect(&calls, handlerErr))
		if err != nil {
			t.Fatalf("ProcessDue: %v", err)
		}
		if ran != 1 {
			t.Errorf("ProcessDue ran %d handlers at attempt %d, want 1", ran, attempt)
		}
	}

	if got := calls.Load(); got != 3 {
		t.Errorf("handler calls = %d, want 3", got)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE message_id = 'm-retry' AND status = 'failed'
		AND retry_count = 3 AND scheduled_at IS NULL`); n != 1 {
		t.Errorf("inbox rows marked failed for good = %d, want 1", n)
	}

	// A redelivery after the last attempt does not run the handler.
	again, err := p.Process(ctx, testMessage("m-retry"), failingEffect(&calls, handlerErr))
	if err != nil {
		t.Fatalf("Process after the last attempt: %v", err)
	}
	if again.Outcome != Failed || again.Err != nil {
		t.Errorf("result after the last attempt = %+v, want failed without running the handler", again)
	}
	if ran, err := p.ProcessDue(ctx, failingEffect(&calls, handlerErr)); err != nil || ran != 0 {
		t.Errorf("ProcessDue after the last attempt = %d, %v; want 0, nil", ran, err)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("handler calls after the redelivery = %d, want 3", got)
	}
}

func TestProcessSkipsRetryNotYetDue(t *testing.T) {
	p, pool := newProcessor(t, typescriptShape)
	p.cfg.RetryBase = time.Hour
	p.cfg.RetryMax = time.Hour
	ctx := context.Background()
	var calls atomic.Int32

	if _, err := p.Process(ctx, testMessage("m-later"), failingEffect(&calls, errors.New("boom"))); err != nil {
		t.Fatalf("Process: %v", err)
	}
	res, err := p.Process(ctx, testMessage("m-later"), recordEffect(&calls))
	if err != nil {
		t.Fatalf("redelivered Process: %v", err)
	}
	if res.Outcome != RetryScheduled || res.Err != nil || res.RetryAt.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("redelivery result = %+v, want the stored retry about an hour ahead", res)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("handler calls = %d, want 1", got)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM effects`); n != 0 {
		t.Errorf("effect rows = %d, want 0", n)
	}
}

func TestProcessRetriesInPlaceWithoutRetryColumns(t *testing.T) {
	p, pool := newProcessor(t, pythonShape)
	ctx := context.Background()
	var calls atomic.Int32

	// Fails twice, then succeeds: Process retries within the call.
	flaky := func(ctx context.Context, tx pgx.Tx, m Message) error {
		if calls.Add(1) < 3 {
			if _, err := tx.Exec(ctx, `INSERT INTO effects (message_id, n) VALUES ($1, -1)`, m.ID); err != nil {
				return err
			}
			return errors.New("not yet")
		}
		_, err := tx.Exec(ctx, `INSERT INTO effects (message_id, n) VALUES ($1, 1)`, m.ID)
		return err
	}
	res, err := p.Process(ctx, testMessage("m-flaky"), flaky)
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if res.Outcome != Processed {
		t.Errorf("outcome = %s, want processed", res.Outcome)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("handler calls = %d, want 3", got)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM effects WHERE n = 1`); n != 1 {
		t.Errorf("committed effect rows = %d, want 1", n)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM effects WHERE n = -1`); n != 0 {
		t.Errorf("effect rows of failed attempts = %d, want 0", n)
	}

	// Always failing: 3 attempts, then status failed.
	calls.Store(0)
	res, err = p.Process(ctx, testMessage("m-broken"), failingEffect(&calls, errors.New("bad invoice")))
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	if res.Outcome != Failed || res.Attempts != 3 {
		t.Errorf("result = %+v, want failed after 3 attempts", res)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("handler calls = %d, want 3", got)
	}
	if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE message_id = 'm-broken'
		AND status = 'failed' AND error_message = 'bad invoice' AND length(id) = 36`); n != 1 {
		t.Errorf("failed inbox rows = %d, want 1", n)
	}

	again, err := p.Process(ctx, testMessage("m-broken"), recordEffect(&calls))
	if err != nil || again.Outcome != Failed {
		t.Errorf("redelivery = %+v, %v; want failed without running the handler", again, err)
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("handler calls after the redelivery = %d, want 3", got)
	}
}

func TestProcessPermanentError(t *testing.T) {
	for _, s := range shapes {
		t.Run(string(s), func(t *testing.T) {
			p, pool := newProcessor(t, s)
			var calls atomic.Int32

			res, err := p.Process(context.Background(), testMessage("m-perm"),
				failingEffect(&calls, Permanent(errors.New("unknown customer"))))
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			if res.Outcome != Failed {
				t.Errorf("outcome = %s, want failed", res.Outcome)
			}
			if got := calls.Load(); got != 1 {
				t.Errorf("handler calls = %d, want 1", got)
			}
			if n := queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE status = 'failed' AND error_message = 'unknown customer'`); n != 1 {
				t.Errorf("failed inbox rows = %d, want 1", n)
			}
		})
	}
}

func TestProcessDueHandlesRecordedRows(t *testing.T) {
	for _, s := range shapes {
		t.Run(string(s), func(t *testing.T) {
			p, pool := newProcessor(t, s)
			ctx := context.Background()

			// Rows as `walrelay inbox` records them: status received.
			msgs := make([]pending, 0, 15)
			for i := range 15 {
				msgs = append(msgs, pending{message: testMessage(fmt.Sprintf("rec-%02d", i))})
			}
			args := []any{"billing"}
			for i := range msgs {
				args = p.table.appendArgs(args, &msgs[i].message)
			}
			if _, err := pool.Exec(ctx, p.table.insertSQL(len(msgs)), args...); err != nil {
				t.Fatalf("record rows: %v", err)
			}

			var calls atomic.Int32
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.RunDue(runCtx, recordEffect(&calls)) }()

			waitFor(t, 10*time.Second, "15 processed rows", func() bool {
				return queryInt(t, pool, `SELECT count(*) FROM inbox_messages WHERE status = 'processed'`) == 15
			})
			cancel()
			if err := <-done; err != nil {
				t.Errorf("RunDue: %v", err)
			}

			if got := calls.Load(); got != 15 {
				t.Errorf("handler calls = %d, want 15", got)
			}
			if n := queryInt(t, pool, `SELECT count(DISTINCT message_id) FROM effects`); n != 15 {
				t.Errorf("distinct effects = %d, want 15", n)
			}
		})
	}
}

func TestNewProcessorNeedsStatus(t *testing.T) {
	pgURL := newDatabase(t, pythonShape)
	pool := newPool(t, pgURL)
	if _, err := pool.Exec(context.Background(), `ALTER TABLE inbox_messages DROP COLUMN status`); err != nil {
		t.Fatal(err)
	}

	_, err := NewProcessor(context.Background(), pool, ProcessorConfig{Source: "billing"}, testLogger(t))
	var schemaErr *SchemaError
	if !errors.As(err, &schemaErr) {
		t.Fatalf("NewProcessor = %v, want a *SchemaError about the status column", err)
	}
}
