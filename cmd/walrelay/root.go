package main

import (
	"github.com/spf13/cobra"
)

// envPrefix is the prefix of the environment variable of every flag:
// --max-in-flight is WALRELAY_MAX_IN_FLIGHT.
const envPrefix = "WALRELAY_"

func newRootCommand() *cobra.Command {
	logs := &logOptions{}

	root := &cobra.Command{
		Use:   "walrelay",
		Short: "Relay transactional outbox rows from the Postgres WAL to RabbitMQ",
		Long: "walrelay reads outbox inserts from a pgoutput logical replication slot, publishes each one\n" +
			"to RabbitMQ and confirms the slot position only after the broker confirms the message.\n\n" +
			"Every flag can also be set with its WALRELAY_* environment variable (--max-in-flight is\n" +
			"WALRELAY_MAX_IN_FLIGHT) or as a key of the YAML file named by --config; a flag wins over\n" +
			"the variable, the variable over the file, and the file over the default.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applySettings(cmd); err != nil {
				return err
			}
			logs.secrets = urlSecrets(cmd.Flags())
			return nil
		},
	}
	root.SetFlagErrorFunc(flagError)

	pf := root.PersistentFlags()
	pf.String(configFlag, "", "YAML file of settings whose keys are the flag names, such as \"max-in-flight: 500\"")
	pf.Var(newChoiceValue(&logs.level, "info", "debug", "info", "warn", "error"), "log-level",
		"log level: debug, info, warn or error")
	pf.Var(newChoiceValue(&logs.format, "auto", "auto", "json", "console"), "log-format",
		"log format: json, console, or auto (console when stderr is a terminal, else json)")

	root.AddCommand(
		newRunCommand(logs),
		newRecoverCommand(logs),
		newReplayCommand(logs),
		newMigrateCommand(logs),
		newInboxCommand(logs),
		newStatusCommand(logs),
		newSetupCommand(logs),
		newTeardownCommand(logs),
		newHealthcheckCommand(),
		newVersionCommand(),
		newBenchCommand(logs),
	)

	return root
}
