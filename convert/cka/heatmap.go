package cka

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/lorasync/lorasync/convert/lorasuite"
)

// HeatmapCell is the side of one matrix entry in pixels when the matrix is
// small; large matrices shrink cells so the image stays under ~1000 pixels.
const HeatmapCell = 16

// Heatmap writes sim (L_old x L_new) as a PNG: old layers top to bottom, new
// layers left to right, values in [0, 1] on a dark-blue-to-yellow scale
// (viridis anchors), and every pair of path marked with a red square outline.
// Values outside [0, 1] (and NaN) are clamped (NaN drawn black). path may be
// nil; a pair outside the matrix is an error.
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
	cell := max(3, min(HeatmapCell, 1000/max(rows, cols)))
	img := image.NewRGBA(image.Rect(0, 0, cols*cell, rows*cell))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			c := colormap(sim.At(i, j))
			for y := i * cell; y < (i+1)*cell; y++ {
				for x := j * cell; x < (j+1)*cell; x++ {
					img.SetRGBA(x, y, c)
				}
			}
		}
	}
	red := color.RGBA{R: 230, G: 20, B: 20, A: 255}
	for _, p := range path {
		x0, y0 := p.New*cell, p.Old*cell
		for k := 0; k < cell; k++ {
			img.SetRGBA(x0+k, y0, red)
			img.SetRGBA(x0+k, y0+cell-1, red)
			img.SetRGBA(x0, y0+k, red)
			img.SetRGBA(x0+cell-1, y0+k, red)
		}
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("cka: heatmap: %w", err)
	}
	return nil
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
