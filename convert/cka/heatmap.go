package cka

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// HeatmapCell is the side of one matrix entry in pixels when the matrix is
// small; large matrices shrink cells so the grid stays under ~900 pixels.
const HeatmapCell = 24

// Margins around the grid for the title, the tick labels and the legend.
const (
	heatLeft   = 44 // old-layer labels
	heatTop    = 40 // title and new-layer labels
	heatBottom = 26 // colour legend
	heatRight  = 12
)

const heatTitle = "linear CKA: old layers (rows) x new layers; red: layer map"

// heatLayout returns the cell size and the grid's top-left corner.
func heatLayout(rows, cols int) (cell, x0, y0 int) {
	return max(3, min(HeatmapCell, 900/max(rows, cols))), heatLeft, heatTop
}

// Heatmap writes sim (L_old x L_new) as a PNG for people: old layers top to
// bottom, new layers left to right, each labelled; values on viridis from
// the matrix's smallest to its largest finite value (both clamped to [0, 1];
// the legend states the range), NaN black; every pair of path outlined in
// red. path may be nil; a pair outside the matrix is an error.
func Heatmap(w io.Writer, sim mat.Matrix, path []lorasuite.LayerPair) error {
	rows, cols := sim.Dims()
	if rows == 0 || cols == 0 {
		return fmt.Errorf("cka: heatmap of an empty %d x %d matrix", rows, cols)
	}
	for _, p := range path {
		if p.Old < 0 || p.Old >= rows || p.New < 0 || p.New >= cols {
			return fmt.Errorf("cka: heatmap: layer pair (%d, %d) outside the %d x %d matrix", p.Old, p.New, rows, cols)
		}
	}
	lo, hi := valueRange(sim)
	cell, x0, y0 := heatLayout(rows, cols)
	width := max(x0+cols*cell+heatRight, 8+7*len(heatTitle))
	img := image.NewRGBA(image.Rect(0, 0, width, y0+rows*cell+heatBottom))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			v := sim.At(i, j)
			if !math.IsNaN(v) {
				v = (clamp01(v) - lo) / (hi - lo)
			}
			fill(img, x0+j*cell, y0+i*cell, cell, cell, colormap(v))
		}
	}
	red := color.RGBA{R: 230, G: 20, B: 20, A: 255}
	for _, p := range path {
		x, y := x0+p.New*cell, y0+p.Old*cell
		for k := 0; k < cell; k++ {
			img.SetRGBA(x+k, y, red)
			img.SetRGBA(x+k, y+cell-1, red)
			img.SetRGBA(x, y+k, red)
			img.SetRGBA(x+cell-1, y+k, red)
		}
	}
	// Labels: basicfont's 7x13 glyphs; every layer when cells are wide
	// enough for two digits, else every 5th.
	text := func(x, y int, s string) {
		d := font.Drawer{Dst: img, Src: image.Black, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	text(4, 13, heatTitle)
	step := 1
	if cell < 16 {
		step = 5
	}
	for j := 0; j < cols; j += step {
		s := fmt.Sprint(j)
		text(x0+j*cell+cell/2-len(s)*7/2, y0-5, s)
	}
	for i := 0; i < rows; i += step {
		s := fmt.Sprint(i)
		text(x0-6-len(s)*7, y0+i*cell+cell/2+5, s)
	}
	// Legend: the colour ramp and its range.
	ly := y0 + rows*cell + 8
	for k := 0; k < 80; k++ {
		fill(img, x0+k, ly, 1, 10, colormap(float64(k)/79))
	}
	text(x0+88, ly+10, fmt.Sprintf("%.3f .. %.3f", lo, hi))
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("cka: heatmap: %w", err)
	}
	return nil
}

// valueRange is the smallest and largest finite value of m clamped to
// [0, 1], or [0, 1] when they (nearly) coincide.
func valueRange(m mat.Matrix) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	r, c := m.Dims()
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			if v := m.At(i, j); !math.IsNaN(v) {
				lo, hi = math.Min(lo, clamp01(v)), math.Max(hi, clamp01(v))
			}
		}
	}
	if !(hi-lo > 1e-9) {
		return 0, 1
	}
	return lo, hi
}

func fill(img *image.RGBA, x, y, w, h int, c color.RGBA) {
	draw.Draw(img, image.Rect(x, y, x+w, y+h), &image.Uniform{c}, image.Point{}, draw.Src)
}

// viridis samples matplotlib's viridis colormap at 0, 0.25, 0.5, 0.75, 1.
var viridis = [5][3]float64{
	{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37},
}

// colormap maps v in [0, 1] to a colour by linear interpolation between the
// viridis anchors.
func colormap(v float64) color.RGBA {
	if math.IsNaN(v) {
		return color.RGBA{A: 255}
	}
	v = clamp01(v)
	t := v * float64(len(viridis)-1)
	k := min(int(t), len(viridis)-2)
	f := t - float64(k)
	var c [3]uint8
	for i := range c {
		c[i] = uint8(math.Round(viridis[k][i]*(1-f) + viridis[k+1][i]*f))
	}
	return color.RGBA{R: c[0], G: c[1], B: c[2], A: 255}
}
