package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// CheckLogOrder checks walrelay's delivery rule on the row numbers ns of
// the messages a consumer received, in arrival order: every n in
// [from, to) arrives, nothing else does, and each message is the next row
// or a rewind to an earlier one after a failure (a repeated suffix), never
// a jump ahead. It returns the number of duplicates, or an error naming
// the first delivery that breaks the rule.
func CheckLogOrder(ns []int, from, to int) (int, error) {
	seen := make(map[int]bool, to-from)
	highest, last := from-1, from-1

	for i, n := range ns {
		if n < from || n >= to {
			return 0, fmt.Errorf("delivery %d has n=%d, outside the rows [%d, %d)", i, n, from, to)
		}
		if n > highest+1 {
			return 0, fmt.Errorf("delivery %d has n=%d while the highest so far is n=%d: a gap", i, n, highest)
		}
		if n > last && n != last+1 {
			return 0, fmt.Errorf("delivery %d has n=%d after n=%d: out of order", i, n, last)
		}
		seen[n] = true
		highest = max(highest, n)
		last = n
	}

	for n := from; n < to; n++ {
		if !seen[n] {
			return 0, fmt.Errorf("row n=%d was never delivered", n)
		}
	}

	return len(ns) - len(seen), nil
}

// WaitSlotPast waits up to timeout until the slot's confirmed_flush_lsn is
// past lsn, and returns an error naming the position it reached otherwise.
func WaitSlotPast(pgURL, slot, lsn string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)

	deadline := time.Now().Add(timeout)
	for {
		var past bool
		var confirmed string
		err := conn.QueryRow(ctx, `
			SELECT confirmed_flush_lsn > $1::pg_lsn, confirmed_flush_lsn::text
			FROM pg_replication_slots WHERE slot_name = $2`, lsn, slot).Scan(&past, &confirmed)
		if err != nil {
			return fmt.Errorf("query slot %s: %w", slot, err)
		}
		if past {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slot %s confirmed_flush_lsn is %s after %s, want past %s", slot, confirmed, timeout, lsn)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// BuildWalrelay builds the walrelay command from the package folder pkg
// (like ../cmd/walrelay) into a new temporary folder, and returns the
// binary's path and a function that removes the folder.
func BuildWalrelay(pkg string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "walrelay-bin")
	if err != nil {
		return "", nil, err
	}
	remove := func() { os.RemoveAll(dir) }

	binary := filepath.Join(dir, "walrelay")
	build := exec.Command("go", "build", "-o", binary, pkg)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		remove()
		return "", nil, fmt.Errorf("build walrelay from %s: %w", pkg, err)
	}

	return binary, remove, nil
}
