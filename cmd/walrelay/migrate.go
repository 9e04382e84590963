package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/migrations"
)

func newMigrateCommand(logs *logOptions) *cobra.Command {
	var pgURL string

	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or update the Event-Forge outbox and inbox tables and walrelay's checkpoint table",
		Long: "migrate applies the embedded, versioned migrations: Event-Forge's outbox_messages and\n" +
			"inbox_messages tables and walrelay's walrelay_checkpoints table. Running it again applies\n" +
			"nothing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, os.Stderr)
			if err != nil {
				return err
			}

			applied, err := migrations.Up(cmd.Context(), pgURL, log)
			if err != nil {
				return err
			}

			out := cmd.OutOrStdout()
			if len(applied) == 0 {
				fmt.Fprintln(out, "migrate: the schema is up to date")
				return nil
			}
			for _, a := range applied {
				fmt.Fprintf(out, "migrate: applied %s version %d (%s)\n", a.Set, a.Version, a.Source)
			}

			return nil
		},
	}

	addPostgresFlag(cmd, &pgURL)

	return cmd
}
