package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"github.com/rs/zerolog"
)

// Set names one independent group of migrations with its own version table.
type Set string

const (
	// SetEventForge creates Event-Forge's outbox_messages and inbox_messages.
	SetEventForge Set = "eventforge"

	// SetWalrelay creates walrelay's checkpoint table.
	SetWalrelay Set = "walrelay"
)

// Applied is one migration that Up has just applied.
type Applied struct {
	Set     Set
	Version int64
	Source  string // file name, such as "00001_create_checkpoints.sql"
}

// State is the state of one migration in the database.
type State struct {
	Set       Set
	Version   int64
	Source    string    // file name, such as "00001_create_checkpoints.sql"
	Applied   bool      // recorded in the set's version table
	AppliedAt time.Time // zero unless Applied
}

//go:embed sql/eventforge/*.sql sql/walrelay/*.sql
var embedded embed.FS

// setSpec describes where a set's SQL lives and which version table records it.
type setSpec struct {
	dir          string
	versionTable string
}

var specs = map[Set]setSpec{
	SetEventForge: {dir: "sql/eventforge", versionTable: "walrelay_eventforge_migrations"},
	SetWalrelay:   {dir: "sql/walrelay", versionTable: "walrelay_migrations"},
}

// allSets lists every set in the order Up applies them.
var allSets = []Set{SetEventForge, SetWalrelay}

// lockRetryInterval and lockRetries bound how long Up waits for another
// process that holds a set's migration lock: 1 s steps, 5 minutes in total.
const (
	lockRetryInterval = 1
	lockRetries       = 300
)

// Sets returns every known set in the order Up applies them.
func Sets() []Set {
	return append([]Set(nil), allSets...)
}

// Up applies the pending migrations of the given sets (all sets when none is
// named) to the database at pgURL, in the order of Sets. It holds a
// session-level advisory lock per set while it runs, so two processes that
// start at once apply each version once. The second process waits up to 5
// minutes for the lock. Up returns the migrations applied, which is empty
// when nothing was pending.
//
// On error it returns the migrations applied before the failure together with
// the error. A failed migration is rolled back by its transaction; on context
// cancel the running statement is cancelled and rolled back the same way.
func Up(ctx context.Context, pgURL string, log zerolog.Logger, sets ...Set) ([]Applied, error) {
	selected, err := selectSets(sets)
	if err != nil {
		return nil, err
	}

	db, target, err := openDB(pgURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()

	log = log.With().Str("component", "migrations").Str("database", target).Logger()

	var applied []Applied
	for _, set := range selected {
		results, err := upSet(ctx, db, set)
		for _, result := range results {
			applied = append(applied, Applied{Set: set, Version: result.Source.Version, Source: result.Source.Path})
			log.Info().
				Str("set", string(set)).
				Int64("version", result.Source.Version).
				Str("source", result.Source.Path).
				Dur("duration", result.Duration).
				Msg("applied migration")
		}
		if err != nil {
			return applied, fmt.Errorf("apply migrations of set %q to %s: %w", set, target, err)
		}
	}

	if len(applied) == 0 {
		log.Info().Strs("sets", setNames(selected)).Msg("migrations up to date, nothing applied")
	}
	return applied, nil
}

// upSet applies one set's pending migrations. On a partial failure it returns
// the results of the migrations that were applied before the failing one.
func upSet(ctx context.Context, db *sql.DB, set Set) ([]*goose.MigrationResult, error) {
	provider, err := newProvider(db, set, true)
	if err != nil {
		return nil, err
	}

	results, err := provider.Up(ctx)
	if err != nil {
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			return partial.Applied, err
		}
		return nil, err
	}
	return results, nil
}

// Status reports every migration of the given sets (all sets when none is
// named) and whether the database at pgURL has it applied. It takes no lock,
// so it does not wait for a running Up, and it creates no version table: a set
// whose version table is missing reports all of its migrations as pending.
func Status(ctx context.Context, pgURL string, sets ...Set) ([]State, error) {
	selected, err := selectSets(sets)
	if err != nil {
		return nil, err
	}

	db, target, err := openDB(pgURL)
	if err != nil {
		return nil, err
	}
	defer db.Close()

	var states []State
	for _, set := range selected {
		setStates, err := statusSet(ctx, db, set)
		if err != nil {
			return nil, fmt.Errorf("read migration status of set %q from %s: %w", set, target, err)
		}
		states = append(states, setStates...)
	}
	return states, nil
}

// statusSet reports one set's migrations without locking and without creating
// the version table.
func statusSet(ctx context.Context, db *sql.DB, set Set) ([]State, error) {
	provider, err := newProvider(db, set, false)
	if err != nil {
		return nil, err
	}

	var exists bool
	err = db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", specs[set].versionTable).Scan(&exists)
	if err != nil {
		return nil, fmt.Errorf("check version table %s: %w", specs[set].versionTable, err)
	}

	if !exists {
		var states []State
		for _, source := range provider.ListSources() {
			states = append(states, State{Set: set, Version: source.Version, Source: source.Path})
		}
		return states, nil
	}

	statuses, err := provider.Status(ctx)
	if err != nil {
		return nil, err
	}
	states := make([]State, 0, len(statuses))
	for _, status := range statuses {
		states = append(states, State{
			Set:       set,
			Version:   status.Source.Version,
			Source:    status.Source.Path,
			Applied:   status.State == goose.StateApplied,
			AppliedAt: status.AppliedAt,
		})
	}
	return states, nil
}

// newProvider builds a goose provider for one set over its embedded SQL. With
// locked set, the provider holds a Postgres advisory lock, whose id is derived
// from the set's version table name, for the whole run.
func newProvider(db *sql.DB, set Set, locked bool) (*goose.Provider, error) {
	spec := specs[set]

	fsys, err := fs.Sub(embedded, spec.dir)
	if err != nil {
		return nil, fmt.Errorf("open embedded migrations of set %q: %w", set, err)
	}

	options := []goose.ProviderOption{
		goose.WithTableName(spec.versionTable),
		goose.WithDisableGlobalRegistry(true),
	}
	if locked {
		locker, err := lock.NewPostgresSessionLocker(
			lock.WithLockID(int64(crc32.ChecksumIEEE([]byte(spec.versionTable)))),
			lock.WithLockTimeout(lockRetryInterval, lockRetries),
		)
		if err != nil {
			return nil, fmt.Errorf("create migration lock for set %q: %w", set, err)
		}
		options = append(options, goose.WithSessionLocker(locker))
	}

	provider, err := goose.NewProvider(goose.DialectPostgres, db, fsys, options...)
	if err != nil {
		return nil, fmt.Errorf("load migrations of set %q: %w", set, err)
	}
	return provider, nil
}

// selectSets validates the requested sets and returns them without duplicates
// in the order of allSets; no request means all sets.
func selectSets(requested []Set) ([]Set, error) {
	if len(requested) == 0 {
		return Sets(), nil
	}

	wanted := make(map[Set]bool, len(requested))
	for _, set := range requested {
		if _, ok := specs[set]; !ok {
			return nil, fmt.Errorf("unknown migration set %q: use one of %s", set, strings.Join(setNames(allSets), ", "))
		}
		wanted[set] = true
	}

	var selected []Set
	for _, set := range allSets {
		if wanted[set] {
			selected = append(selected, set)
		}
	}
	return selected, nil
}

func setNames(sets []Set) []string {
	names := make([]string, len(sets))
	for i, set := range sets {
		names[i] = string(set)
	}
	return names
}
