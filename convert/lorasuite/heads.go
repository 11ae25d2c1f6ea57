package lorasuite

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/linalg"
)

// headRidge is the ridge added to a per-head Gram block G_a = P_a P_a^T
// (h_o x h_o) before the lstsq solve, relative to its mean eigenvalue
// tr(G_a)/h_o. Trained heads are full rank, so it only matters for degenerate
// (e.g. zero or duplicated) heads, where it selects the minimum-norm map
// instead of failing; at 1e-10 it moves a well-conditioned solve by ~1e-10.
const headRidge = 1e-10

// HeadTransfer selects the per-head transfer of step 4.
type HeadTransfer string

const (
	// HeadLstsq (the default) uses T = argmin ||T W_o[a] W_x - W_n[b]||_F, the
	// least-squares map that is exact under in-head changes of basis and
	// leaves a self-migration unchanged.
	HeadLstsq HeadTransfer = "lstsq"
	// HeadGram uses the paper's T = M[a,b]^T = (W_o[a] W_x W_n[b]^T)^T, exact
	// only when the old head block has orthonormal rows.
	HeadGram HeadTransfer = "gram"
)

// RoleBlocks holds one projection's per-head transfers in a layer pair,
// indexed by NEW attention head b (length H_n). For k_proj/v_proj a new
// attention head stands for its KV head j / (H_n/G_n) (repeat_interleave), and
// Project averages the heads of each group back to G_n KV heads.
type RoleBlocks struct {
	// Src[b] is the old block feeding new head b: the old attention head for
	// q/o, the old KV head for k/v; -1 when b is unmatched (it gets no delta).
	Src []int
	// T[b] is the transfer block, empty (Rows == 0) when Src[b] < 0.
	//   q/k/v: h_n x h_o, rows: dW_n[b] = T[b] dW_o[Src[b]] (then the input map).
	//   o:     h_o x h_n, columns: dO_n[:, b] = W_x^T dO_o[:, Src[b]] T[b].
	T []Block
	// Residual[b] = ||T W_o[a] W_x - W_n[b]||_F / ||W_n[b]||_F for q/k/v and
	// ||W_x^T O_o[:, a] T - O_n[:, b]||_F / ||O_n[:, b]||_F for o (computed from
	// h x h blocks; -1 when unmatched or when the new block is zero).
	// Related models give ~0.2-0.4, unrelated ones 0.7+. Absolute accuracy is
	// ~sqrt(eps) of the products: ~3e-4 with the default float32 products,
	// ~1e-8 with Options.Float64.
	Residual []float64
	// Gain[b] = ||T[b]||_2, the largest singular value (-1 when unmatched).
	Gain []float64
}

// Block is a small dense matrix as plain data (row-major Rows x Cols), so
// that slices of blocks with empty entries serialise with gob and JSON.
type Block struct {
	Rows, Cols int
	Data       []float64
}

// blockOf copies m into a Block.
func blockOf(m *mat.Dense) Block {
	r, c := m.Dims()
	return Block{Rows: r, Cols: c, Data: mat.DenseCopyOf(m).RawMatrix().Data}
}

// Empty reports whether the block holds no matrix.
func (b Block) Empty() bool { return b.Rows == 0 || b.Cols == 0 }

// Dense returns the block as a *mat.Dense sharing its data, nil when empty.
// It panics ("lorasuite:") when len(Data) != Rows*Cols.
func (b Block) Dense() *mat.Dense {
	if b.Empty() {
		return nil
	}
	if len(b.Data) != b.Rows*b.Cols {
		panic(fmt.Sprintf("lorasuite: block of %d values for %d x %d", len(b.Data), b.Rows, b.Cols))
	}
	return mat.NewDense(b.Rows, b.Cols, b.Data)
}

// LayerAnalysis is the base-only analysis of one (old, new) layer pair.
type LayerAnalysis struct {
	// Old and New are the layer indices.
	Old, New int
	// Similarity is H_o x H_n: the cosine between [vec qk_a; vec vo_a] (old
	// head a mapped through W_x) and [vec qk_b; vec vo_b] (step 3).
	Similarity *mat.Dense
	// HeadMap[b] is the old attention head assigned to new head b, -1 if none
	// (length H_n; Hungarian assignment maximising the total similarity).
	HeadMap []int
	// DroppedOld lists the old attention heads left unmatched (H_o > H_n).
	DroppedOld []int
	// Q, K, V, O are the per-head transfers of q_proj, k_proj, v_proj, o_proj.
	Q, K, V, O RoleBlocks
}

// roleProducts holds the factored products of one projection in a layer pair.
// For q/k/v: P = W_o W_x (rows_o x d_n), M = P W_n^T (rows_o x rows_n). For o
// the same with W_o, W_n replaced by O_o^T and O_n^T. Blocks are h x h.
type roleProducts struct {
	m      *mat.Dense      // M: (nBlocksOld*h_o) x (nBlocksNew*h_n)
	gOld   []*mat.SymDense // per old block: P_a P_a^T (h_o x h_o)
	gNew   []*mat.SymDense // per new block: W_n[b] W_n[b]^T (h_n x h_n)
	ho, hn int
}

// block returns the h_o x h_n block M[a, b] as a view.
func (p *roleProducts) block(a, b int) *mat.Dense {
	return p.m.Slice(a*p.ho, (a+1)*p.ho, b*p.hn, (b+1)*p.hn).(*mat.Dense)
}

// scratch holds the large per-layer buffers of Analyze, reused from one
// layer pair to the next so that a streamed run makes little garbage (a
// Llama-size layer would otherwise churn ~2 GB through the GC per layer).
type scratch struct {
	p32, m32   []float32    // P = W_o W_x and M in float32
	tOld, tNew []float32    // O^T of the old and new layer
	m          [4][]float64 // M per role (q, k, v, o), alive until the transfers are done
	blk        []float64    // one h x d block in float64, for the Gram blocks
}

// products computes P = wOld W_x, its diagonal Gram blocks, M = P wNew^T and
// wNew's diagonal Gram blocks. wOld is (blocksOld*ho) x d_o, wNew is
// (blocksNew*hn) x d_n, row-major float32; both are rows-are-heads layouts.
// With f64 the two big products run in float64 (Dgemm), otherwise in float32
// (Sgemm, about twice as fast) in sc's buffers, M landing in sc.m[slot]; the
// Gram blocks always accumulate in float64.
func products(wOld []float32, ro int, wNew []float32, rn int, tr *Transfer, ho, hn int, f64 bool, sc *scratch, slot int) *roleProducts {
	out := &roleProducts{ho: ho, hn: hn, gNew: sc.gramBlocks32(wNew, rn, tr.DNew, hn)}
	if f64 {
		p := tr.mulRight(linalg.Dense64(wOld, ro, tr.DOld))
		out.m = mat.NewDense(ro, rn, nil)
		out.m.Mul(p, linalg.Dense64(wNew, rn, tr.DNew).T())
		out.gOld = gramBlocks(p, ho)
		return out
	}
	sc.p32 = tr.mulRight32(sc.p32, wOld, ro)
	sc.m32 = grow(sc.m32, ro*rn)
	blas32.Gemm(blas.NoTrans, blas.Trans, 1,
		blas32.General{Rows: ro, Cols: tr.DNew, Stride: tr.DNew, Data: sc.p32},
		blas32.General{Rows: rn, Cols: tr.DNew, Stride: tr.DNew, Data: wNew},
		0, blas32.General{Rows: ro, Cols: rn, Stride: rn, Data: sc.m32})
	sc.m[slot] = grow(sc.m[slot], ro*rn)
	for i, v := range sc.m32 {
		sc.m[slot][i] = float64(v)
	}
	out.m = mat.NewDense(ro, rn, sc.m[slot])
	out.gOld = sc.gramBlocks32(sc.p32, ro, tr.DNew, ho)
	return out
}

// gramBlocks32 returns the diagonal h x h blocks of w w^T for a row-major
// float32 w (rows x cols), converting one h-row block at a time to float64
// (in sc.blk) so that no float64 copy of w is ever whole.
func (sc *scratch) gramBlocks32(w []float32, rows, cols, h int) []*mat.SymDense {
	g := make([]*mat.SymDense, rows/h)
	sc.blk = grow(sc.blk, h*cols)
	for a := range g {
		for i, v := range w[a*h*cols : (a+1)*h*cols] {
			sc.blk[i] = float64(v)
		}
		s := mat.NewSymDense(h, nil)
		s.SymOuterK(1, mat.NewDense(h, cols, sc.blk))
		g[a] = s
	}
	return g
}

// transpose32 returns the transpose (cols x rows) of a row-major rows x cols
// slice, written into dst when it has the capacity.
func transpose32(dst, x []float32, rows, cols int) []float32 {
	out := grow(dst, len(x))
	const tile = 64 // cache blocking
	for i0 := 0; i0 < rows; i0 += tile {
		for j0 := 0; j0 < cols; j0 += tile {
			for i := i0; i < min(i0+tile, rows); i++ {
				for j := j0; j < min(j0+tile, cols); j++ {
					out[j*rows+i] = x[i*cols+j]
				}
			}
		}
	}
	return out
}

// gramBlocks returns the diagonal h x h blocks of w w^T.
func gramBlocks(w *mat.Dense, h int) []*mat.SymDense {
	rows, cols := w.Dims()
	g := make([]*mat.SymDense, rows/h)
	for a := range g {
		s := mat.NewSymDense(h, nil)
		s.SymOuterK(1, w.Slice(a*h, (a+1)*h, 0, cols))
		g[a] = s
	}
	return g
}

// symDot returns <a, b>_F for two symmetric matrices of equal size.
func symDot(a, b *mat.SymDense) float64 {
	n := a.SymmetricDim()
	s := 0.0
	for i := 0; i < n; i++ {
		s += a.At(i, i) * b.At(i, i)
		for j := i + 1; j < n; j++ {
			s += 2 * a.At(i, j) * b.At(i, j)
		}
	}
	return s
}

// headSimilarity fills the H_o x H_n cosine matrix of step 3 from the factored
// products: <qk_a, qk_b> = <M_Q[a,b], M_K[a,b]>, <vo_a, vo_b> = <M_V[a,b], M_O[a,b]>,
// ||qk_a||^2 = <G_Q[a], G_K[a]>, ||vo_a||^2 = <G_V[a], G_O[a]>, with K/V blocks
// taken at each side's KV head of the attention head (GQA repeat).
func headSimilarity(q, k, v, o *roleProducts, od, nd Dims) *mat.Dense {
	normOld := make([]float64, od.Heads)
	for a := range normOld {
		c := od.kvOf(a)
		normOld[a] = math.Sqrt(max(symDot(q.gOld[a], k.gOld[c])+symDot(v.gOld[c], o.gOld[a]), 0))
	}
	normNew := make([]float64, nd.Heads)
	for b := range normNew {
		g := nd.kvOf(b)
		normNew[b] = math.Sqrt(max(symDot(q.gNew[b], k.gNew[g])+symDot(v.gNew[g], o.gNew[b]), 0))
	}
	sim := mat.NewDense(od.Heads, nd.Heads, nil)
	for a := 0; a < od.Heads; a++ {
		c := od.kvOf(a)
		for b := 0; b < nd.Heads; b++ {
			g := nd.kvOf(b)
			den := normOld[a] * normNew[b]
			if den == 0 {
				continue // a zero circuit is similar to nothing
			}
			dot := frobDot(q.block(a, b), k.block(c, g)) + frobDot(v.block(c, g), o.block(a, b))
			sim.Set(a, b, dot/den)
		}
	}
	return sim
}

// headTransfer computes the transfer block for old block a -> new block b of
// one role and its relative fit residual. For rows (q/k/v) it returns T
// (h_n x h_o) minimising ||T P_a - W_n[b]||; for columns (o) S (h_o x h_n)
// minimising ||R_a S - O_n[:, b]||, with R_a = W_x^T O_o[:, a] = P_a^T. Both
// use only M[a,b], G_old[a] and G_new[b]:
//
//	lstsq: T^T = S = (G_a + l I)^-1 M[a,b];  gram: T^T = S = M[a,b]
//	residual^2 = tr(G_new[b]) - 2 <S, M[a,b]> + <G_a S, S>.
func headTransfer(p *roleProducts, a, b int, method HeadTransfer, cols bool) (*mat.Dense, float64, error) {
	m := p.block(a, b)
	var s *mat.Dense
	switch method {
	case HeadGram:
		s = mat.DenseCopyOf(m)
	case HeadLstsq:
		g := mat.NewSymDense(p.ho, nil)
		g.CopySym(p.gOld[a])
		l := headRidge * mat.Trace(g) / float64(p.ho)
		if l == 0 { // an all-zero old head: nothing to map from, T = 0
			s = mat.NewDense(p.ho, p.hn, nil)
			break
		}
		for i := 0; i < p.ho; i++ {
			g.SetSym(i, i, g.At(i, i)+l)
		}
		var err error
		if s, err = linalg.SolveSPD(g, m); err != nil {
			return nil, 0, err
		}
	default:
		return nil, 0, fmt.Errorf("lorasuite: unknown head transfer %q (want %q or %q)", method, HeadLstsq, HeadGram)
	}
	var gs mat.Dense
	gs.Mul(p.gOld[a], s)
	tn := mat.Trace(p.gNew[b])
	res := tn - 2*frobDot(s, m) + frobDot(&gs, s)
	rel := -1.0
	if tn > 0 {
		rel = math.Sqrt(max(res, 0) / tn)
	}
	if cols {
		return s, rel, nil
	}
	return mat.DenseCopyOf(s.T()), rel, nil
}
