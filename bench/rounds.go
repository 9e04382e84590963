package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// rounds returns the ceiling and backlog scenarios of a run with several
// rounds. The first one to run measures every round, the ceiling and the
// backlog in turn, so that both see the same stretch of the machine's load.
// It then reports each step's median round, and the other one does
// nothing. scenarios are the run's scenarios, in run order.
func (r *runner) rounds(scenarios []string) (ceiling, backlog func(context.Context) error) {
	withCeiling := slices.Contains(scenarios, ScenarioCeiling)
	withBacklog := slices.Contains(scenarios, ScenarioBacklog)
	done := false

	all := func(ctx context.Context) error {
		if done {
			return nil
		}
		done = true

		var ceilings [][]CeilingStep
		var drains []*Drain

		// The report gets the median of the rounds done, also when a
		// round fails or the run is stopped.
		defer func() {
			r.report.Ceiling = medianCeiling(ceilings)
			r.report.Backlog = medianDrain(drains)
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
	return all, all
}

// medianCeiling returns, for each window, the step of the median round
// with every round's rate attached, or nil for no rounds. Each element of
// rounds holds one round's steps in window order. An interrupted run can
// leave an even number of rounds, and then the median is the upper of the
// two middle rounds.
func medianCeiling(rounds [][]CeilingStep) []CeilingStep {
	if len(rounds) == 0 {
		return nil
	}
	out := make([]CeilingStep, len(rounds[0]))
	for i := range out {
		steps := make([]CeilingStep, len(rounds))
		rates := make([]float64, len(rounds))
		for j, round := range rounds {
			steps[j], rates[j] = round[i], round[i].MsgsPerS
		}
		slices.SortFunc(steps, func(a, b CeilingStep) int { return cmp.Compare(a.MsgsPerS, b.MsgsPerS) })
		out[i] = steps[len(steps)/2]
		out[i].RoundsMsgsPerS = rates
	}
	return out
}

// medianDrain returns the drain of the median round, chosen as in
// medianCeiling, with every round's rate attached, or nil for no rounds.
func medianDrain(drains []*Drain) *Drain {
	if len(drains) == 0 {
		return nil
	}
	rates := make([]float64, len(drains))
	for i, d := range drains {
		rates[i] = d.MsgsPerS
	}
	sorted := slices.Clone(drains)
	slices.SortFunc(sorted, func(a, b *Drain) int { return cmp.Compare(a.MsgsPerS, b.MsgsPerS) })
	median := *sorted[len(sorted)/2]
	median.RoundsMsgsPerS = rates
	return &median
}
