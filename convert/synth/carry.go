package synth

import (
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/arch"
)

// carrier copies old tensors into the new model through P.
type carrier struct {
	old, new *Model
	p        *mat.Dense // d_o x d_n
}

// carryVocab builds the new vocabulary: the old regular tokens in a shuffled
// order, then extraVocab new words, then the special token last. It returns
// newID[old id].
func carryVocab(rng *rand.Rand, old, nm *Model, extra int) []int {
	if old.Vocab == nil { // no tokenizer: ids stay, so they can be matched by id
		newID := make([]int, old.Spec.Vocab)
		for i := range newID {
			newID[i] = i
		}
		return newID
	}
	vo := len(old.Vocab)
	words := Vocabulary(vo + extra)
	order := rng.Perm(vo - 1)
	nm.Vocab = make([][]byte, 0, vo+extra)
	newID := make([]int, vo)
	for _, o := range order {
		newID[o] = len(nm.Vocab)
		nm.Vocab = append(nm.Vocab, old.Vocab[o])
	}
	nm.Vocab = append(nm.Vocab, words[vo-1:vo-1+extra]...)
	newID[vo-1] = len(nm.Vocab)
	nm.Vocab = append(nm.Vocab, old.Vocab[vo-1])
	return newID
}

// rowsTimesP returns x P for x (n x d_o) row-major.
func (c *carrier) rowsTimesP(x []float32, n int) []float32 {
	var out mat.Dense
	out.Mul(mat.NewDense(n, c.p.RawMatrix().Rows, f64(x)), c.p)
	return f32(out.RawMatrix().Data)
}

// embeddings carries E (and an untied lm_head) row by row to the new ids.
func (c *carrier) embeddings(newID []int, noise float64, rng *rand.Rand) {
	_, dn := c.p.Dims()
	names := [][2]string{{c.old.Config.Embed(), c.new.Config.Embed()}}
	if !c.old.Config.TiedEmbeddings && !c.new.Config.TiedEmbeddings {
		names = append(names, [2]string{c.old.Config.LMHead(), c.new.Config.LMHead()})
	}
	for _, nn := range names {
		carried := c.rowsTimesP(c.old.W[nn[0]], len(newID))
		dst := c.new.W[nn[1]]
		for o, n := range newID {
			row := dst[n*dn : (n+1)*dn]
			copy(row, carried[o*dn:(o+1)*dn])
			if noise > 0 {
				for k := range row {
					row[k] += float32(rng.NormFloat64() * noise)
				}
			}
		}
	}
}

// layer carries old layer lo into new layer ln with head map hm.
func (c *carrier) layer(lo, ln int, hm []int) {
	oc, nc := c.old.Config, c.new.Config
	h := oc.HeadDim
	do, dn := c.p.Dims()
	ow := func(r arch.Role) []float32 { return c.old.W[oc.Weight(lo, r)] }
	nw := func(r arch.Role) []float32 { return c.new.W[nc.Weight(ln, r)] }

	// q: row blocks of h rows per head, carried by P on the input side.
	qp := c.rowsTimesP(ow(arch.Q), oc.Heads*h)
	for b, a := range hm {
		copy(nw(arch.Q)[b*h*dn:(b+1)*h*dn], qp[a*h*dn:(a+1)*h*dn])
	}
	// k, v: each new KV head is the mean of the old KV heads its query heads used.
	perNew, perOld := nc.Heads/nc.KVHeads, oc.Heads/oc.KVHeads
	for _, r := range []arch.Role{arch.K, arch.V} {
		carried := c.rowsTimesP(ow(r), oc.KVHeads*h)
		dst := nw(r)
		for g := 0; g < nc.KVHeads; g++ {
			srcs := map[int]bool{}
			for b := g * perNew; b < (g+1)*perNew; b++ {
				srcs[hm[b]/perOld] = true
			}
			block := dst[g*h*dn : (g+1)*h*dn]
			clear(block)
			for s := range srcs {
				for i, v := range carried[s*h*dn : (s+1)*h*dn] {
					block[i] += v / float32(len(srcs))
				}
			}
			if ob, nb := oc.Bias(lo, r), nc.Bias(ln, r); ob != "" && nb != "" {
				bias := c.new.W[nb][g*h : (g+1)*h]
				clear(bias)
				for s := range srcs {
					for i, v := range c.old.W[ob][s*h : (s+1)*h] {
						bias[i] += v / float32(len(srcs))
					}
				}
			}
		}
	}
	// o: d x (H h); new columns of head b = P^T (old columns of head hm[b]).
	var ot mat.Dense
	ot.Mul(c.p.T(), mat.NewDense(do, oc.Heads*h, f64(ow(arch.O))))
	o := nw(arch.O)
	for b, a := range hm {
		for i := 0; i < dn; i++ {
			for k := 0; k < h; k++ {
				o[i*nc.Heads*h+b*h+k] = float32(ot.At(i, a*h+k))
			}
		}
	}
	// MLP: gate/up rows carried by P; down columns by P^T, new ones zero.
	io := oc.Intermediate
	for _, r := range []arch.Role{arch.Gate, arch.Up} {
		copy(nw(r)[:io*dn], c.rowsTimesP(ow(r), io))
	}
	var down mat.Dense
	down.Mul(c.p.T(), mat.NewDense(do, io, f64(ow(arch.Down))))
	dst := nw(arch.Down)
	// New neurons (columns io..) write nothing back, so the carried layer
	// computes exactly what the old one did.
	for i := 0; i < dn; i++ {
		row := dst[i*nc.Intermediate : (i+1)*nc.Intermediate]
		for k := range row {
			row[k] = 0
			if k < io {
				row[k] = float32(down.At(i, k))
			}
		}
	}
	// Biases of carried heads (qwen2) follow their heads.
	if ob, nb := oc.Bias(lo, arch.Q), nc.Bias(ln, arch.Q); ob != "" && nb != "" {
		for b, a := range hm {
			copy(c.new.W[nb][b*h:(b+1)*h], c.old.W[ob][a*h:(a+1)*h])
		}
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func f32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}
