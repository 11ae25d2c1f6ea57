package linalg

import "sync"

// serial counts the holders of SerialBLAS and remembers the thread count to
// restore when the last one releases.
var serial struct {
	sync.Mutex
	holders int
	saved   int
}

// SerialBLAS switches the backend's BLAS and LAPACK to one thread until the
// returned release function is called, and returns that function; release is
// idempotent. Use it around a phase made of many small calls (h x h solves,
// singular values of 128 x 128 blocks) that the caller runs from several
// goroutines at once: OpenBLAS 0.3.21 parallelises even a 128 x 128 Dgesdd,
// and concurrent multi-threaded calls spin on its shared thread pool (a 128 x
// 128 singular-value call measured 1.3 ms alone but ~27 ms each with four
// concurrent callers; single-threaded, 0.7 ms alone and 0.6 ms concurrent).
// Big products should run outside such a phase, where they keep every thread.
//
// The setting is process-wide (OpenBLAS has no per-caller thread count before
// 0.3.27): while any holder is active, every BLAS call in the process runs on
// one thread, which makes a concurrent large GEMM slower but never changes a
// result. Holders nest and overlap safely: the first switches to one thread,
// the last restores the count that was in effect before the first. In the
// pure-Go build it does nothing (gonum's native routines have no thread pool).
func SerialBLAS() (release func()) {
	serial.Lock()
	if serial.holders == 0 {
		serial.saved = blasThreads()
		setBLASThreads(1)
	}
	serial.holders++
	serial.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			serial.Lock()
			serial.holders--
			if serial.holders == 0 {
				setBLASThreads(serial.saved)
			}
			serial.Unlock()
		})
	}
}

// Threads returns the number of threads the backend's BLAS currently uses
// (1 in the pure-Go build, whose Dgemm parallelises over goroutines itself).
func Threads() int { return blasThreads() }
