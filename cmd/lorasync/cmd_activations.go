package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lorasync/lorasync/convert/forward"
	"github.com/lorasync/lorasync/convert/safetensors"
)

// activationsCmd runs the CPU forward pass on one sequence of token ids and
// writes every stage as float32 [1, seq, dim] tensors (embeddings, layers.{i},
// final_norm, logits) plus input_ids, the layout of the transformers
// reference fixtures, so the two can be compared tensor by tensor.
var activationsCmd = &cobra.Command{
	Use:   "activations --model DIR --ids 1,2,3 --out FILE.safetensors",
	Short: "Write the hidden state after every layer of a model for a sequence of token ids",
	Args:  cobra.NoArgs,
	RunE: func(cmd *cobra.Command, _ []string) error {
		dir, _ := cmd.Flags().GetString("model")
		idList, _ := cmd.Flags().GetString("ids")
		out, _ := cmd.Flags().GetString("out")
		logits, _ := cmd.Flags().GetBool("logits")
		if dir == "" || idList == "" || out == "" {
			return fmt.Errorf("activations: --model, --ids and --out are required")
		}
		ids, err := parseIDs(idList)
		if err != nil {
			return fmt.Errorf("activations: --ids: %w", err)
		}
		m, err := forward.Open(dir)
		if err != nil {
			return err
		}
		defer m.Close()
		ts, err := m.Trace(cmd.Context(), ids, logits)
		if err != nil {
			return err
		}
		return safetensors.WriteFile(out, ts, map[string]string{"generator": "lorasync activations"})
	},
}

// parseIDs reads comma- or space-separated non-negative integers.
func parseIDs(s string) ([]int, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("no token ids in %q", s)
	}
	ids := make([]int, len(fields))
	for i, f := range fields {
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("token id %q is not a non-negative integer", f)
		}
		ids[i] = v
	}
	return ids, nil
}

func init() {
	activationsCmd.Flags().String("model", "", "model directory (config.json and safetensors weights)")
	activationsCmd.Flags().String("ids", "", "token ids, comma-separated (as `lorasync tokenize` prints them)")
	activationsCmd.Flags().String("out", "", "output .safetensors file")
	activationsCmd.Flags().Bool("logits", true, "also compute logits (seq x vocab)")
	rootCmd.AddCommand(activationsCmd)
}
