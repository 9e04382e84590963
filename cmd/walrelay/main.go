// Command walrelay relays transactional outbox rows from the Postgres WAL to
// RabbitMQ, and runs the tools around it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "walrelay: "+err.Error())
		os.Exit(1)
	}
}
