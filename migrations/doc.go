// Package migrations applies walrelay's embedded, versioned SQL with goose.
//
// There are two independent sets, each with its own goose version table, so a
// command can apply only the set it needs:
//
//   - SetEventForge creates Event-Forge's outbox_messages and inbox_messages
//     tables, their enum types and indexes exactly as the Event-Forge TypeORM
//     adapter's generator and its upgrades create them (version table
//     walrelay_eventforge_migrations).
//   - SetWalrelay creates walrelay's own walrelay_checkpoints table (version
//     table walrelay_migrations).
//
// The invariant: every statement is guarded by IF NOT EXISTS, a catalog check
// or a WHERE clause that matches no row once applied, or it sets a default
// that is already in place. So applying SetEventForge to a database whose
// tables the Event-Forge TypeORM generator already created changes nothing
// but the version table.
//
// Each migration runs in its own transaction, and Up holds a session-level
// advisory lock per set while it runs, so two processes starting at once apply
// each version once. There are no down migrations, because walrelay never
// drops tables it may share with an application.
//
// Objects are created unqualified, so they land in the first schema of the
// connection's search_path (normally public).
//
// NOTE: tables that TypeORM's synchronize option built from the Event-Forge
// entity classes (packages/adapter-typeorm/src/entities in
// codeforprod/Event-Forge) differ from the generator's: payload is text
// (simple-json), timestamps have no time zone, and the status enum type has
// TypeORM's default name. Up does not convert such tables. It adds the
// generator's enum types, its named indexes and any missing inbox columns
// next to them, a path that no test covers.
package migrations
