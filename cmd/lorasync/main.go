// Command lorasync keeps LoRA adapters alive across base-model upgrades.
//
// Each subcommand lives in its own file (cmd_*.go) and registers itself on
// the root command in an init function; main only wires signals and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/convert"
)

// rootCmd is the lorasync command tree. Subcommands add themselves in init.
var rootCmd = &cobra.Command{
	Use:   "lorasync",
	Short: "Migrate LoRA adapters to upgraded base models (LoRASuite), as a daemon or one-shot",
	Long: `lorasync watches base-model repositories on the Hugging Face Hub, and when a
new version appears it migrates every registered LoRA adapter to it with the
LoRASuite method and pushes the results back to the Hub.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lorasync:", err)
		os.Exit(1)
	}
}

// run executes the command tree with a context that SIGINT and SIGTERM cancel.
// A cancellation at shutdown is not an error.
func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Bound the Go heap for conversions (one-shot and daemon alike); see
	// convert.SetMemoryLimit for GOMEMLIMIT and LORASYNC_MEMORY_LIMIT.
	if _, err := convert.SetMemoryLimit(); err != nil {
		return err
	}
	err := rootCmd.ExecuteContext(ctx)
	if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}
