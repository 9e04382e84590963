package inbox

import (
	"context"
	"fmt"
	"time"
)

// ProcessDue runs h for up to PollBatch stored messages of this source
// that wait for it: rows that `walrelay inbox` recorded (status received)
// and failed messages whose scheduled retry is due. Each goes through
// Process, so a row that another worker handles meanwhile is skipped as a
// duplicate, never run twice. It returns the number of messages whose
// handler ran, and stops at the first database error or when ctx is
// canceled.
func (p *Processor) ProcessDue(ctx context.Context, h Handler) (int, error) {
	due, err := p.findDue(ctx)
	if err != nil {
		return 0, err
	}

	ran := 0
	for i := range due {
		res, err := p.Process(ctx, due[i], h)
		if err != nil {
			return ran, err
		}
		if res.Err != nil || res.Outcome == Processed {
			ran++
		}
		p.logResult(due[i], res)
	}
	return ran, nil
}

// RunDue calls ProcessDue every PollInterval, and again at once while it
// finds a full batch, until ctx is canceled. Then it returns nil. Errors
// are logged and retried at the next poll.
func (p *Processor) RunDue(ctx context.Context, h Handler) error {
	for {
		n, err := p.ProcessDue(ctx, h)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			p.log.Warn().Err(err).Dur("delay", p.cfg.PollInterval).Msg("processing due inbox messages failed; retrying")
		}
		if err == nil && n >= p.cfg.PollBatch {
			continue
		}

		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.cfg.PollInterval):
		}
	}
}

// findDue reads the messages that wait for a handler, oldest first.
func (p *Processor) findDue(ctx context.Context) ([]Message, error) {
	metadata := "NULL::text"
	if p.table.hasMetadata {
		metadata = "metadata::text"
	}
	where := "status::text = 'received'"
	order := ""
	if p.table.hasRetry {
		where += " OR (status::text = 'failed' AND retry_count < max_retries AND (scheduled_at IS NULL OR scheduled_at <= now()))"
		order = " ORDER BY scheduled_at NULLS FIRST"
	}
	if _, ok := p.table.columns["created_at"]; ok && order == "" {
		order = " ORDER BY created_at"
	}
	sql := "SELECT message_id, event_type, payload::text, " + metadata + " FROM " + p.table.quoted +
		" WHERE source = $1 AND (" + where + ")" + order + " LIMIT $2"

	rows, err := p.db.Query(ctx, sql, p.cfg.Source, p.cfg.PollBatch)
	if err != nil {
		return nil, fmt.Errorf("find due messages in %s: %w", p.table.display, err)
	}
	defer rows.Close()

	var due []Message
	for rows.Next() {
		var m Message
		var payload string
		var metadata *string
		if err := rows.Scan(&m.ID, &m.EventType, &payload, &metadata); err != nil {
			return nil, fmt.Errorf("read due messages in %s: %w", p.table.display, err)
		}
		m.Payload = []byte(payload)
		if metadata != nil && *metadata != "null" {
			m.Metadata = []byte(*metadata)
		}
		due = append(due, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read due messages in %s: %w", p.table.display, err)
	}
	return due, nil
}

func (p *Processor) logResult(m Message, res Result) {
	switch res.Outcome {
	case Failed:
		if res.Err != nil {
			p.log.Error().Err(res.Err).Str("message_id", m.ID).Int("attempts", res.Attempts).
				Msg("handler failed its last attempt; message marked failed")
		}
	case RetryScheduled:
		if res.Err != nil {
			p.log.Warn().Err(res.Err).Str("message_id", m.ID).Int("attempts", res.Attempts).
				Time("retry_at", res.RetryAt).Msg("handler failed; retry scheduled")
		}
	}
}
