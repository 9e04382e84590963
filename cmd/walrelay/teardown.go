package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/checkpoint"
	"github.com/walrelay/walrelay/relay"
	"github.com/walrelay/walrelay/replication"
)

// teardownOptions are the flags of `walrelay teardown`.
type teardownOptions struct {
	pgURL           string
	slot            string
	publication     string
	dropPublication bool
	yes             bool
}

// errNotConfirmed is returned when teardown was not confirmed.
var errNotConfirmed = errors.New("teardown not confirmed")

func newTeardownCommand(logs *logOptions) *cobra.Command {
	opts := &teardownOptions{}

	cmd := &cobra.Command{
		Use:   "teardown",
		Short: "Drop the replication slot (and optionally the publication) and its stored checkpoint",
		Long: "teardown drops the replication slot and deletes walrelay's stored checkpoint of it; with\n" +
			"--drop-publication it also drops the publication. A slot that no relay reads retains WAL\n" +
			"until the disk fills, so remove the slots of relays you retire. Rows committed after the\n" +
			"slot is dropped are not relayed until a new slot exists.\n\n" +
			"It asks for confirmation on the terminal; --yes skips the question. Without a terminal and\n" +
			"without --yes it changes nothing and fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := replication.ValidateSlotName(opts.slot); err != nil {
				return err
			}

			ctx, cancel := context.WithTimeout(cmd.Context(), commandTimeout)
			defer cancel()

			confirm := func(plan string) error {
				if opts.yes {
					return nil
				}
				in := cmd.InOrStdin()
				return askConfirmation(in, isTerminal(in), cmd.ErrOrStderr(), plan)
			}

			return runTeardown(ctx, opts, confirm, log.With().Str("slot", opts.slot).Logger(), cmd.OutOrStdout())
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &opts.pgURL)
	f.StringVar(&opts.slot, "slot", relay.DefaultSlot, "logical replication slot to drop")
	f.StringVar(&opts.publication, "publication", relay.DefaultPublication, "publication that --drop-publication drops")
	f.BoolVar(&opts.dropPublication, "drop-publication", false, "also drop the publication")
	f.BoolVar(&opts.yes, "yes", false, "do not ask for confirmation")

	return cmd
}

// askConfirmation prints plan and reads one line from in; only "yes" goes
// on. Input that is not a terminal is not read at all, so a script that
// forgot --yes cannot confirm by accident.
func askConfirmation(in io.Reader, interactive bool, prompt io.Writer, plan string) error {
	if !interactive {
		return fmt.Errorf("%w: standard input is not a terminal; to %s, pass --yes", errNotConfirmed, plan)
	}

	fmt.Fprintf(prompt, "walrelay teardown will %s.\nType yes to continue: ", plan)
	answer, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the confirmation: %w", err)
	}
	answer = strings.TrimSpace(answer)
	if answer != "yes" {
		return fmt.Errorf("%w: the reply was %q, not yes; nothing was changed", errNotConfirmed, answer)
	}

	return nil
}

// runTeardown describes what it will drop, calls confirm, then drops the
// slot, deletes the checkpoint and, when asked, drops the publication. An
// active slot is an error before anything changes.
func runTeardown(ctx context.Context, opts *teardownOptions, confirm func(plan string) error,
	log zerolog.Logger, out io.Writer) error {
	db, err := connectPostgres(ctx, opts.pgURL)
	if err != nil {
		return err
	}
	defer db.Close(context.WithoutCancel(ctx))

	slot, err := replication.LookupSlot(ctx, db, opts.slot)
	slotExists := err == nil
	if err != nil && !errors.Is(err, replication.ErrSlotNotFound) {
		return err
	}
	if slotExists && slot.Active {
		return fmt.Errorf("replication slot %q is in use by walsender pid %d: stop the walrelay that streams from it, then run teardown again",
			opts.slot, slot.ActivePID)
	}

	plan := fmt.Sprintf("delete the stored checkpoint of slot %q in database %q", opts.slot, db.Config().Database)
	if slotExists {
		plan = fmt.Sprintf("drop replication slot %q (confirmed up to %s, %s behind) and ", opts.slot, slot.ConfirmedFlush,
			formatBytes(slot.LagBytes)) + plan
	}
	if opts.dropPublication {
		plan += fmt.Sprintf(", and drop publication %q", opts.publication)
	}
	if err := confirm(plan); err != nil {
		return err
	}

	if slotExists {
		if err := replication.DropSlot(ctx, db, opts.slot); err != nil {
			return err
		}
		log.Info().Str("lsn", slot.ConfirmedFlush.String()).Msg("dropped replication slot")
		fmt.Fprintf(out, "teardown: dropped replication slot %q\n", opts.slot)
	} else {
		fmt.Fprintf(out, "teardown: replication slot %q does not exist\n", opts.slot)
	}

	if err := deleteCheckpoint(ctx, db, opts.slot, out); err != nil {
		return err
	}

	if opts.dropPublication {
		if err := replication.DropPublication(ctx, db, opts.publication); err != nil {
			return err
		}
		log.Info().Str("publication", opts.publication).Msg("dropped publication")
		fmt.Fprintf(out, "teardown: dropped publication %q\n", opts.publication)
	}

	return nil
}

// deleteCheckpoint deletes the slot's stored checkpoint; a missing
// checkpoint table means there is none.
func deleteCheckpoint(ctx context.Context, db *pgx.Conn, slot string, out io.Writer) error {
	err := checkpoint.NewStore(db).Delete(ctx, slot)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == undefinedTable {
		fmt.Fprintln(out, "teardown: no checkpoint table, so no checkpoint to delete")
		return nil
	}
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "teardown: deleted the stored checkpoint of slot %q\n", slot)
	return nil
}
