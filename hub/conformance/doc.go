// Package conformance checks hub/hubtest, and lorasync's hub.Client, against
// the official JavaScript client @huggingface/hub.
//
// The tests start a hubtest.Server and run small node scripts (js/*.mjs,
// dependencies pinned by js/package-lock.json) that upload and download
// through the official client; the Go side then reads the same data back
// from the fake's store and through hub.Client, and the other way round, and
// demands byte-identical files and identical commit ids.
//
// The npm dependencies are installed with `npm ci` in hub/conformance/js
// (.ci/run does it). Without them the tests skip, unless
// LORASYNC_REQUIRE_CONFORMANCE=1, which makes a missing peer a failure.
//
// The package holds tests only.
package conformance
