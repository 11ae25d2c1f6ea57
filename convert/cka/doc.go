// Package cka measures how alike two models' layers are (LoRASuite step 2):
// linear centered kernel alignment (Kornblith et al. 2019, "Similarity of
// Neural Network Representations Revisited", eq. 5) between the hidden states
// every layer produces on the same calibration text, giving the L_old x L_new
// similarity matrix that convert/lorasuite.DPLayerMap maximises.
//
// For representations X (n x d_x) and Y (n x d_y) of the same n samples, with
// columns centred,
//
//	CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
//	          = <K_X, K_Y>_F / (||K_X||_F ||K_Y||_F),  K_X = X X^T (n x n).
//
// The first (feature) form costs O(n d_x d_y), the second (Gram) O(n^2 (d_x +
// d_y)); Linear picks the cheaper. Both accumulate in float64. CKA is 1 for
// X = Y and invariant to orthogonal transforms and isotropic scaling of either
// side, which is what lets models of different widths be compared.
//
// Samples: with identical tokenisations of the calibration lines every token
// position is a sample (evenly subsampled to a cap); when the tokenisers
// differ each line is mean-pooled per layer so both models give one sample per
// line. The package embeds a built-in calibration set (Builtin) of varied
// English prose, code, numbers and a little multilingual text; users may pass
// their own lines.
//
// Heatmap renders the matrix as a PNG with the chosen layer map drawn on it.
package cka
