// Package state is the daemon's memory: which base versions each track has
// seen and every migration job with its status, attempts, last error and
// output, in one bbolt database file (state.db).
//
// bbolt holds an exclusive flock while a writer has the file open, and a
// shared one for read-only handles. So that `lorasync status` can read the
// database while the daemon runs, a Store never keeps the file open between
// transactions: Update and View open the file, run one transaction and close
// it. Transactions are milliseconds, so the other side's open waits at most
// that long (bounded by Options.LockTimeout). A read-only Store never writes,
// never creates the file, and takes only the shared lock.
//
// All updates are transactional: Update either commits every change made by
// its function or none.
package state
