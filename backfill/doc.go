// Package backfill reads outbox rows from the table itself, for the cases
// the slot's stream cannot cover: rows committed before walrelay created the
// slot, rows written while a lost slot did not exist, and explicit replays.
//
// Rows come in (created_at, id) order, so a backfill interrupted after a
// row can resume strictly after it. In steady state walrelay reads only the
// WAL; this package runs at slot creation, in recovery and on replay.
package backfill
