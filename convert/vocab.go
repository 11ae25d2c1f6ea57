package convert

import (
	"context"
	"fmt"
	"slices"

	"github.com/lorasync/lorasync/convert/lorasuite"
	"github.com/lorasync/lorasync/convert/safetensors"
	"github.com/lorasync/lorasync/convert/tokenizer"
)

// Vocabulary matching methods, as recorded in the provenance.
const (
	VocabBytes = "tokenizer-bytes" // tokens matched by decoded bytes (step 1, "go further")
	VocabIDs   = "ids"             // no tokenizers, equal vocab sizes: id i is id i
)

// sharedVocab returns the matched token ids of the two models and how they
// were matched.
func sharedVocab(old, new *model) (oldIDs, newIDs []int, method string, err error) {
	ot, err := old.tokenizer()
	if err != nil {
		return nil, nil, "", err
	}
	nt, err := new.tokenizer()
	if err != nil {
		return nil, nil, "", err
	}
	switch {
	case ot != nil && nt != nil:
		oldIDs, newIDs = tokenizer.SharedVocab(ot, nt)
		method = VocabBytes
	case ot == nil && nt == nil && old.cfg.Vocab == new.cfg.Vocab:
		oldIDs = make([]int, old.cfg.Vocab)
		for i := range oldIDs {
			oldIDs[i] = i
		}
		newIDs, method = oldIDs, VocabIDs
	case ot == nil && nt == nil:
		return nil, nil, "", fmt.Errorf("neither %s nor %s has a tokenizer.json and their vocabularies differ (%d vs %d tokens): no shared vocabulary for the transfer matrix (use --transfer identity for same-width models)", old.dir, new.dir, old.cfg.Vocab, new.cfg.Vocab)
	default:
		missing := old.dir
		if nt == nil {
			missing = new.dir
		}
		return nil, nil, "", fmt.Errorf("%s has no tokenizer.json, so its tokens cannot be matched to the other model's", missing)
	}
	// Rows past the embedding matrix (tokenizers larger than vocab_size) cannot be fitted.
	k := 0
	for i := range oldIDs {
		if oldIDs[i] < old.cfg.Vocab && newIDs[i] < new.cfg.Vocab {
			oldIDs[k], newIDs[k] = oldIDs[i], newIDs[i]
			k++
		}
	}
	if k < old.cfg.Hidden {
		return nil, nil, "", fmt.Errorf("only %d tokens shared between %s and %s, fewer than the old hidden size %d: the transfer matrix would be underdetermined", k, old.dir, new.dir, old.cfg.Hidden)
	}
	return oldIDs[:k], newIDs[:k], method, nil
}

// embeddingRows streams the shared rows of both input embeddings in chunks,
// converted to float32 from the mapping one row at a time. After each chunk
// the span of rows it read is released from the process's resident set
// (safetensors.Releaser): the old ids ascend, so its spans are consumed for
// good; the new ids are in old-id order, scattered, so a later chunk may
// fault a released page back in from the page cache (a minor fault per row
// at most), which is far cheaper than keeping a 1 GB embedding resident.
func embeddingRows(old, new *model, oldIDs, newIDs []int) lorasuite.RowSource {
	const chunk = 1024
	return func(ctx context.Context, emit func(o, n []float32) error) error {
		do, dn := old.cfg.Hidden, new.cfg.Hidden
		ob := make([]float32, 0, chunk*do)
		nb := make([]float32, 0, chunk*dn)
		for lo := 0; lo < len(oldIDs); lo += chunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			ob, nb = ob[:0], nb[:0]
			for k := lo; k < min(lo+chunk, len(oldIDs)); k++ {
				r, err := old.weights.Float32Rows(old.cfg.Embed(), oldIDs[k], oldIDs[k]+1)
				if err != nil {
					return err
				}
				ob = append(ob, r...)
				if r, err = new.weights.Float32Rows(new.cfg.Embed(), newIDs[k], newIDs[k]+1); err != nil {
					return err
				}
				nb = append(nb, r...)
			}
			hi := min(lo+chunk, len(oldIDs))
			if err := releaseSpan(old, oldIDs[lo:hi]); err != nil {
				return err
			}
			if err := releaseSpan(new, newIDs[lo:hi]); err != nil {
				return err
			}
			if err := emit(ob, nb); err != nil {
				return err
			}
		}
		return nil
	}
}

// releaseSpan releases the embedding rows from the smallest to the largest of ids.
func releaseSpan(m *model, ids []int) error {
	if len(ids) == 0 {
		return nil
	}
	lo, hi := slices.Min(ids), slices.Max(ids)
	return safetensors.ReleaseRows(m.weights, m.cfg.Embed(), lo, hi+1)
}
