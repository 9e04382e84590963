// Package soak holds walrelay's soak test, built only with the build tag
// soak (make soak). It runs the walrelay binary under a steady insert load
// for a configurable time while it injects faults at random intervals: a
// terminated walsender, cut connections, a stalled broker connection and
// SIGKILL of the process. The test fails unless every committed row reaches
// the queue, in log order (each delivery is the next row or a rewind to an
// earlier one), and it reports the duplicates and the longest delivery gap.
package soak
