package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/checkpoint"
	"github.com/walrelay/walrelay/migrations"
	"github.com/walrelay/walrelay/relay"
	"github.com/walrelay/walrelay/replication"
)

// failoverMinVersion is the first PostgreSQL (server_version_num) whose
// logical slots can be synchronized to standbys (the FAILOVER option).
const failoverMinVersion = 170000

// setupOptions are the flags of `walrelay setup`.
type setupOptions struct {
	pgURL       string
	table       string
	publication string
	slot        string
	failover    bool
	backfill    string
}

func newSetupCommand(logs *logOptions) *cobra.Command {
	opts := &setupOptions{}

	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Create the publication, the replication slot and the checkpoint table, then exit",
		Long: "setup creates what `walrelay run` needs and nothing else: walrelay's checkpoint table, the\n" +
			"publication (FOR TABLE --table WITH (publish = 'insert')) and the pgoutput slot. It is for\n" +
			"teams where a DBA creates these with more privileges than the relay's role has; the relay\n" +
			"then runs with --create=false. What already exists is checked, not changed.\n\n" +
			"Rows committed before the slot exists are not in its stream. With --backfill pending (the\n" +
			"default) or all, setup records that the relay owes them: the first walrelay run publishes\n" +
			"the outbox rows created before the slot (Event-Forge status pending or failed, or all),\n" +
			"oldest first, before it streams.\n\n" +
			"The slot retains WAL from the moment it exists until a relay confirms it: start the relay\n" +
			"soon, or remove the slot with walrelay teardown.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, cmd.ErrOrStderr())
			if err != nil {
				return err
			}

			ctx, cancel := context.WithTimeout(cmd.Context(), commandTimeout)
			defer cancel()

			return runSetup(ctx, opts, log.With().Str("slot", opts.slot).Logger(), cmd.OutOrStdout())
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &opts.pgURL)
	f.StringVar(&opts.table, "table", relay.DefaultTable, "outbox table, as schema.table or table")
	f.StringVar(&opts.publication, "publication", relay.DefaultPublication, "publication to create for --table")
	f.StringVar(&opts.slot, "slot", relay.DefaultSlot, "logical replication slot to create (lowercase letters, digits, underscores)")
	f.BoolVar(&opts.failover, "failover-slot", false,
		"create the slot with FAILOVER, so that standbys with sync_replication_slots keep it (PostgreSQL 17 or later)")
	f.Var(newChoiceValue(&opts.backfill, relay.BackfillPending, relay.BackfillPending, relay.BackfillAll, relay.BackfillNone),
		"backfill", "rows from before a new slot that walrelay run publishes first: pending (status pending or failed), all or none")

	return cmd
}

// runSetup creates the checkpoint table, the publication and the slot, in
// that order, and prints one line per object. It stops at the first error;
// what it created before stays.
func runSetup(ctx context.Context, opts *setupOptions, log zerolog.Logger, out io.Writer) error {
	table, err := replication.ParseTable(opts.table)
	if err != nil {
		return err
	}
	if err := replication.ValidateSlotName(opts.slot); err != nil {
		return err
	}

	db, err := connectPostgres(ctx, opts.pgURL)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))

	info, err := replication.CheckServer(ctx, db)
	if err != nil {
		return err
	}
	if opts.failover && info.VersionNum < failoverMinVersion {
		return fmt.Errorf("--failover-slot needs PostgreSQL 17 or later, but the server runs %s: drop --failover-slot", info.Version)
	}

	applied, err := migrations.Up(ctx, opts.pgURL, log, migrations.SetWalrelay)
	if err != nil {
		return fmt.Errorf("create walrelay's checkpoint table: %w", err)
	}
	if len(applied) > 0 {
		fmt.Fprintln(out, "setup: created table walrelay_checkpoints")
	} else {
		fmt.Fprintln(out, "setup: table walrelay_checkpoints exists")
	}

	pub, err := replication.EnsurePublication(ctx, db, opts.publication, table, true)
	if err != nil {
		return err
	}
	if pub.Created {
		log.Info().Str("publication", opts.publication).Str("table", table.String()).Msg("created publication")
		fmt.Fprintf(out, "setup: created publication %q for table %s\n", opts.publication, table)
	} else {
		fmt.Fprintf(out, "setup: publication %q exists and publishes the inserts of %s\n", opts.publication, table)
	}

	return setupSlot(ctx, db, opts, info, log, out)
}

// setupSlot creates the slot, or checks the one that exists.
func setupSlot(ctx context.Context, db *pgx.Conn, opts *setupOptions, info replication.ServerInfo,
	log zerolog.Logger, out io.Writer) error {
	slot, err := replication.LookupSlot(ctx, db, opts.slot)
	if err == nil {
		if err := slot.Validate(info.Database); err != nil {
			return err
		}
		fmt.Fprintf(out, "setup: replication slot %q exists, confirmed up to %s\n", opts.slot, slot.ConfirmedFlush)
		return nil
	}
	if !errors.Is(err, replication.ErrSlotNotFound) {
		return err
	}

	stream, err := replication.Dial(ctx, opts.pgURL)
	if err != nil {
		return err
	}
	defer stream.Close(context.WithoutCancel(ctx))

	system, err := stream.IdentifySystem(ctx)
	if err != nil {
		return err
	}

	created, err := stream.CreateSlot(ctx, opts.slot, false, opts.failover)
	if errors.Is(err, replication.ErrSlotExists) {
		fmt.Fprintf(out, "setup: replication slot %q was created by another process just now\n", opts.slot)
		return nil
	}
	if err != nil {
		return err
	}

	log.Info().Str("lsn", created.ConsistentPoint.String()).Bool("failover", opts.failover).Msg("created replication slot")
	fmt.Fprintf(out, "setup: created replication slot %q at %s; it retains WAL until walrelay run confirms it\n",
		opts.slot, created.ConsistentPoint)

	// The checkpoint records when the slot was created, which bounds the
	// owed backfill because the slot's snapshot ends with this connection.
	var owed *checkpoint.Backfill
	if opts.backfill != relay.BackfillNone {
		owed = &checkpoint.Backfill{Mode: opts.backfill}
	}
	cp := checkpoint.Checkpoint{
		Slot:             opts.slot,
		SystemIdentifier: system.SystemID,
		Timeline:         system.Timeline,
		Flushed:          created.ConsistentPoint,
	}
	if err := checkpoint.NewStore(db).SaveCreatedSlot(ctx, cp, owed); err != nil {
		return fmt.Errorf("%w; the slot exists without its creation record: remove it with walrelay teardown, fix this and run setup again", err)
	}
	if owed != nil {
		fmt.Fprintf(out, "setup: walrelay run will first publish the %s rows created before the slot\n", opts.backfill)
	}

	return nil
}
