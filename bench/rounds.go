package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// rounds returns the scenario that measures every round of a run with
// several rounds: the ceiling and then the backlog, in turn, so that both
// see the same stretch of the machine's load. It then reports each step's
// median round. withCeiling and withBacklog tell which of the two the run
// includes.
func (r *runner) rounds(withCeiling, withBacklog bool) func(context.Context) error {
	return func(ctx context.Context) error {
		var ceilings [][]CeilingStep
		var drains []*Drain

		// The report gets the median of the rounds done, also when a
		// round fails or the run is stopped.
		defer func() {
			r.report.Ceiling = medianCeiling(ceilings)
			r.report.Backlog = nil
			if len(drains) > 0 {
				d, rates := median(drains, func(d *Drain) float64 { return d.MsgsPerS })
				median := *d
				median.RoundsMsgsPerS = rates
				r.report.Backlog = &median
			}
		}()

		for round := 1; round <= r.cfg.Rounds; round++ {
			r.log.Info().Int("round", round).Int("rounds", r.cfg.Rounds).Msg("round started")
			if withCeiling {
				r.report.Ceiling = nil
				if err := r.ceiling(ctx); err != nil {
					return fmt.Errorf("round %d of %d, ceiling: %w", round, r.cfg.Rounds, err)
				}
				ceilings = append(ceilings, r.report.Ceiling)
			}
			if withBacklog {
				r.report.Backlog = nil
				if err := r.backlog(ctx); err != nil {
					return fmt.Errorf("round %d of %d, backlog: %w", round, r.cfg.Rounds, err)
				}
				drains = append(drains, r.report.Backlog)
			}
		}
		return nil
	}
}

// medianCeiling returns, for each window, the step of the median round
// with every round's rate attached, or nil for no rounds. Each element of
// rounds is one round's steps in window order.
func medianCeiling(rounds [][]CeilingStep) []CeilingStep {
	if len(rounds) == 0 {
		return nil
	}
	out := make([]CeilingStep, len(rounds[0]))
	for i := range out {
		steps := make([]CeilingStep, len(rounds))
		for j, round := range rounds {
			steps[j] = round[i]
		}
		out[i], out[i].RoundsMsgsPerS = median(steps, func(s CeilingStep) float64 { return s.MsgsPerS })
	}
	return out
}

// median returns the item of items whose rate is the median, and every
// item's rate in the order given. An interrupted run can leave an even
// number of rounds, and then the median is the upper of the two middle
// ones. items must not be empty.
func median[T any](items []T, rate func(T) float64) (T, []float64) {
	rates := make([]float64, len(items))
	for i, item := range items {
		rates[i] = rate(item)
	}
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b T) int { return cmp.Compare(rate(a), rate(b)) })
	return sorted[len(sorted)/2], rates
}
