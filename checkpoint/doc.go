// Package checkpoint decides which WAL position walrelay may report to
// Postgres as flushed, and stores that position between runs.
//
// The rule: the flush LSN is the end LSN (TransactionEndLSN) of the newest
// transaction whose messages the broker has all confirmed, and every older
// transaction is confirmed too. A commit's start LSN is never reported,
// because the server would then send that transaction again after a restart.
// Nothing past a published but unconfirmed message is reported. When no
// transaction is open and nothing is in flight, the position of a server
// keepalive may be reported so that an idle outbox does not hold WAL back.
//
// The Ledger enforces the rule in memory. Store keeps the last flushed
// position, the server identity and the commit time of the last relayed
// transaction in the walrelay_checkpoints table, for status and recovery.
package checkpoint
