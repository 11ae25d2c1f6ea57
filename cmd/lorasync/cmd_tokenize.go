package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/convert/tokenizer"
)

// tokenizeCmd prints the ids a tokenizer.json gives a text, as
// @huggingface/tokenizers' encode(text) would (special tokens included),
// comma-separated so the output can be passed to `lorasync activations --ids`.
var tokenizeCmd = &cobra.Command{
	Use:   "tokenize --tokenizer FILE TEXT",
	Short: "Print the token ids of TEXT under a tokenizer.json",
	Args:  cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		path, _ := cmd.Flags().GetString("tokenizer")
		if path == "" {
			return fmt.Errorf("tokenize: --tokenizer FILE is required")
		}
		tk, err := tokenizer.Load(path)
		if err != nil {
			return err
		}
		ids := tk.Encode(args[0])
		parts := make([]string, len(ids))
		for i, id := range ids {
			parts[i] = strconv.Itoa(id)
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), strings.Join(parts, ","))
		return err
	},
}

func init() {
	tokenizeCmd.Flags().String("tokenizer", "", "path of a tokenizer.json file")
	rootCmd.AddCommand(tokenizeCmd)
}
