package bench

import "context"

// payload measures walrelay's backlog throughput at each payload size next
// to the broker ceiling for the same message, at walrelay's own in-flight
// window.
func (r *runner) payload(ctx context.Context) error {
	for _, size := range payloadSizes {
		n := payloadRows(r.cfg.Rows, size)

		shape, err := newShape(ctx, r.env.db, size)
		if err != nil {
			return err
		}

		ceiling, err := r.ceilingStep(ctx, shape, r.cfg.MaxInFlight, n)
		if err != nil {
			return err
		}
		drain, err := r.walrelayDrain(ctx, shape, n)
		if err != nil {
			return err
		}

		step := PayloadStep{
			PayloadBytes:    size,
			BodyBytes:       ceiling.BodyBytes,
			Messages:        n,
			MsgsPerS:        drain.MsgsPerS,
			BodyBytesPerS:   drain.MsgsPerS * float64(ceiling.BodyBytes),
			CeilingWindow:   r.cfg.MaxInFlight,
			CeilingMsgsPerS: ceiling.MsgsPerS,
		}
		if ceiling.MsgsPerS > 0 {
			step.RatioToCeilingMsg = drain.MsgsPerS / ceiling.MsgsPerS
		}

		r.report.Payload = append(r.report.Payload, step)
		r.log.Info().Int("payload_bytes", size).Float64("msgs_per_s", step.MsgsPerS).
			Float64("ceiling_msgs_per_s", step.CeilingMsgsPerS).Msg("payload step measured")
	}
	return nil
}

// payloadRows is the number of messages of a payload step. It is at most
// Rows, and at most Rows KiB of payload in all, so that the 64 KiB step
// does not move 6 GB. It is at least Rows/50, so that the step still lasts
// long enough to measure.
func payloadRows(rows, size int) int {
	n := min(rows*1024/size, rows)
	return max(n, rows/50, 1)
}
