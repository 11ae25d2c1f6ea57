package main

import (
	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/daemon/demo"
)

var demoCmd = &cobra.Command{
	Use:   "demo",
	Short: "Play the whole loop offline: fake Hub, a base release, the daemon migrating and pushing an adapter",
	Long: `demo starts a fake Hugging Face Hub on loopback, publishes a generated base
model and a LoRA adapter trained on it, starts the daemon on them, then
publishes a new base release (wider, deeper, grouped-query attention) and
waits until the daemon has migrated the adapter and pushed it. It prints what
happened and leaves everything (models, config, state, logs, the pushed
adapter) in a work directory. No network, no downloads, nothing but Go.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		dir, _ := cmd.Flags().GetString("dir")
		_, err := demo.Run(cmd.Context(), cmd.OutOrStdout(), demo.Options{Dir: dir})
		return err
	},
}

func init() {
	demoCmd.Flags().String("dir", "", "work directory (default: a new temporary directory)")
	rootCmd.AddCommand(demoCmd)
}
