package lorasuite

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// Assign solves the rectangular linear assignment problem, MAXIMISING the
// total score. score is n x m (rows are old heads, columns new heads in this
// package). It returns rowToCol (length n): the column assigned to each row, or
// -1 for rows left unassigned, and the total score of the assignment. Every row
// is assigned when n <= m; otherwise every column is assigned and n-m rows get
// -1. Ties are broken deterministically (the lowest column index reached
// first by the augmenting search).
//
// The algorithm is the shortest augmenting path method with dual potentials
// (Kuhn-Munkres in the form of Jonker & Volgenant 1987, "A shortest augmenting
// path algorithm for dense and sparse linear assignment problems"), O(n^2 m)
// for n <= m. A score that is NaN or infinite is an error.
func Assign(score mat.Matrix) (rowToCol []int, total float64, err error) {
	n, m := score.Dims()
	if d, ok := score.(*mat.Dense); ok && d.IsEmpty() {
		n, m = 0, 0
	}
	for i := 0; i < n; i++ {
		for j := 0; j < m; j++ {
			if v := score.At(i, j); math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, 0, fmt.Errorf("lorasuite: assignment score[%d,%d] = %v", i, j, v)
			}
		}
	}
	rowToCol = make([]int, n)
	for i := range rowToCol {
		rowToCol[i] = -1
	}
	if n == 0 || m == 0 {
		return rowToCol, 0, nil
	}
	if n <= m {
		cols := assignMin(n, m, func(i, j int) float64 { return -score.At(i, j) })
		copy(rowToCol, cols)
	} else {
		// Transpose: assign every column to a distinct row.
		rows := assignMin(m, n, func(j, i int) float64 { return -score.At(i, j) })
		for j, i := range rows {
			rowToCol[i] = j
		}
	}
	for i, j := range rowToCol {
		if j >= 0 {
			total += score.At(i, j)
		}
	}
	return rowToCol, total, nil
}

// assignMin minimises sum cost(i, rowToCol[i]) over injective maps from n rows
// to m >= n columns. Arrays are 1-based internally, index 0 being the virtual
// column the search starts from.
func assignMin(n, m int, cost func(i, j int) float64) []int {
	u := make([]float64, n+1) // row potentials
	v := make([]float64, m+1) // column potentials
	p := make([]int, m+1)     // p[j]: row (1-based) matched to column j, 0 if free
	way := make([]int, m+1)   // way[j]: previous column on the shortest path to j
	minv := make([]float64, m+1)
	used := make([]bool, m+1)
	for i := 1; i <= n; i++ {
		p[0] = i
		j0 := 0
		for j := range minv {
			minv[j] = math.Inf(1)
			used[j] = false
		}
		for {
			used[j0] = true
			i0 := p[j0]
			delta := math.Inf(1)
			j1 := -1
			for j := 1; j <= m; j++ {
				if used[j] {
					continue
				}
				if cur := cost(i0-1, j-1) - u[i0] - v[j]; cur < minv[j] {
					minv[j] = cur
					way[j] = j0
				}
				if minv[j] < delta {
					delta = minv[j]
					j1 = j
				}
			}
			if j1 < 0 {
				panic("lorasuite: assignment found no augmenting path") // impossible with finite costs and m >= n
			}
			for j := 0; j <= m; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if p[j0] == 0 {
				break
			}
		}
		for j0 != 0 { // augment along the path
			j1 := way[j0]
			p[j0] = p[j1]
			j0 = j1
		}
	}
	rowToCol := make([]int, n)
	for j := 1; j <= m; j++ {
		if p[j] != 0 {
			rowToCol[p[j]-1] = j - 1
		}
	}
	return rowToCol
}
