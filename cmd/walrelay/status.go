package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/walrelay/walrelay/checkpoint"
	"github.com/walrelay/walrelay/relay"
	"github.com/walrelay/walrelay/replication"
)

// commandTimeout bounds status, setup and teardown, which run a few short
// queries; a hung server fails them instead of blocking a script forever.
const commandTimeout = time.Minute

// undefinedTable is the SQLSTATE of a query on a missing table.
const undefinedTable = "42P01"

// statusReport is the output of `walrelay status`; its JSON form is a
// stable interface for scripts.
type statusReport struct {
	Database    string            `json:"database"`
	Slot        slotStatus        `json:"slot"`
	Publication publicationStatus `json:"publication"`
	Checkpoint  checkpointStatus  `json:"checkpoint"`
}

type slotStatus struct {
	Name              string `json:"name"`
	Exists            bool   `json:"exists"`
	Active            bool   `json:"active"`
	ActivePID         int32  `json:"active_pid"` // 0 when inactive
	Database          string `json:"database,omitempty"`
	Plugin            string `json:"plugin,omitempty"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	RestartLSN        string `json:"restart_lsn,omitempty"`
	LagBytes          int64  `json:"lag_bytes"`
	WALStatus         string `json:"wal_status,omitempty"`
	// Problem is the reason walrelay cannot use the slot; empty when it can.
	Problem string `json:"problem,omitempty"`
}

type publicationStatus struct {
	Name   string   `json:"name"`
	Exists bool     `json:"exists"`
	Tables []string `json:"tables"`
}

type checkpointStatus struct {
	// TableExists is false before walrelay migrate, setup or run created
	// walrelay_checkpoints.
	TableExists      bool       `json:"table_exists"`
	Found            bool       `json:"found"`
	FlushedLSN       string     `json:"flushed_lsn,omitempty"`
	LastCommitTime   *time.Time `json:"last_commit_time,omitempty"`
	UpdatedAt        *time.Time `json:"updated_at,omitempty"`
	SystemIdentifier string     `json:"system_identifier,omitempty"`
	Timeline         int32      `json:"timeline,omitempty"`
	SlotCreatedAt    *time.Time `json:"slot_created_at,omitempty"` // set when walrelay created the slot
	SlotCreatedLSN   string     `json:"slot_created_lsn,omitempty"`
	// Backfill is the backfill of rows from before the slot that walrelay
	// still owes, or nil.
	Backfill *backfillStatus `json:"backfill,omitempty"`
}

type backfillStatus struct {
	Mode      string     `json:"mode"`
	Since     *time.Time `json:"since,omitempty"`
	Until     *time.Time `json:"until,omitempty"`
	AfterTime *time.Time `json:"after_time,omitempty"` // the last confirmed row's created_at
	AfterID   string     `json:"after_id,omitempty"`
}

func newStatusCommand(_ *logOptions) *cobra.Command {
	var (
		pgURL, slot, publication string
		asJSON                   bool
	)

	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the replication slot, the publication's tables and the stored checkpoint",
		Long: "status prints the slot (active, holder pid, confirmed and restart LSN, lag, wal_status), the\n" +
			"tables of the publication and walrelay's stored checkpoint of the slot, as a table or, with\n" +
			"--json, as one JSON object. It changes nothing. A missing slot or publication is reported,\n" +
			"not an error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := replication.ValidateSlotName(slot); err != nil {
				return err
			}

			ctx, cancel := context.WithTimeout(cmd.Context(), commandTimeout)
			defer cancel()

			report, err := collectStatus(ctx, pgURL, slot, publication)
			if err != nil {
				return err
			}

			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(report)
			}
			return writeStatus(cmd.OutOrStdout(), report)
		},
	}

	f := cmd.Flags()
	addPostgresFlag(cmd, &pgURL)
	f.StringVar(&slot, "slot", relay.DefaultSlot, "logical replication slot to report")
	f.StringVar(&publication, "publication", relay.DefaultPublication, "publication to report")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")

	return cmd
}

// connectPostgres opens an ordinary connection for the admin commands.
func connectPostgres(ctx context.Context, pgURL string) (*pgx.Conn, error) {
	db, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres: %w", err)
	}
	return db, nil
}

// collectStatus queries the slot, the publication and the checkpoint.
func collectStatus(ctx context.Context, pgURL, slotName, publication string) (statusReport, error) {
	db, err := connectPostgres(ctx, pgURL)
	if err != nil {
		return statusReport{}, err
	}
	defer db.Close(context.WithoutCancel(ctx))

	// The URL may name no database (the server then takes the user's), so
	// ask the server.
	var database string
	if err := db.QueryRow(ctx, `SELECT current_database()`).Scan(&database); err != nil {
		return statusReport{}, fmt.Errorf("query the current database: %w", err)
	}

	report := statusReport{
		Database:    database,
		Slot:        slotStatus{Name: slotName},
		Publication: publicationStatus{Name: publication, Tables: []string{}},
	}

	slot, err := replication.LookupSlot(ctx, db, slotName)
	switch {
	case errors.Is(err, replication.ErrSlotNotFound):
	case err != nil:
		return report, err
	default:
		report.Slot = slotStatus{
			Name:              slot.Name,
			Exists:            true,
			Active:            slot.Active,
			ActivePID:         slot.ActivePID,
			Database:          slot.Database,
			Plugin:            slot.Plugin,
			ConfirmedFlushLSN: lsnText(slot.ConfirmedFlush.String()),
			RestartLSN:        lsnText(slot.RestartLSN.String()),
			LagBytes:          slot.LagBytes,
			WALStatus:         slot.WALStatus,
		}
		if problem := slot.Validate(report.Database); problem != nil {
			report.Slot.Problem = problem.Error()
		}
	}

	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, publication).
		Scan(&report.Publication.Exists); err != nil {
		return report, fmt.Errorf("look up publication %q: %w", publication, err)
	}
	if report.Publication.Exists {
		tables, err := replication.PublicationTables(ctx, db, publication)
		if err != nil {
			return report, err
		}
		report.Publication.Tables = append(report.Publication.Tables, tables...)
	}

	report.Checkpoint, err = loadCheckpoint(ctx, db, slotName)
	return report, err
}

// lsnText returns "" for the zero LSN, which a slot reports before it has
// a position.
func lsnText(lsn string) string {
	if lsn == "0/0" {
		return ""
	}
	return lsn
}

func loadCheckpoint(ctx context.Context, db *pgx.Conn, slot string) (checkpointStatus, error) {
	cp, found, err := checkpoint.NewStore(db).Load(ctx, slot)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == undefinedTable {
		return checkpointStatus{}, nil
	}
	if err != nil {
		return checkpointStatus{}, err
	}

	st := checkpointStatus{TableExists: true, Found: found}
	if !found {
		return st, nil
	}

	st.FlushedLSN = cp.Flushed.String()
	st.SystemIdentifier = cp.SystemIdentifier
	st.Timeline = cp.Timeline
	st.UpdatedAt = timePtr(cp.UpdatedAt)
	st.LastCommitTime = timePtr(cp.LastCommitTime)
	st.SlotCreatedAt = timePtr(cp.SlotCreatedAt)
	if cp.SlotCreatedLSN != 0 {
		st.SlotCreatedLSN = cp.SlotCreatedLSN.String()
	}
	if bf := cp.Backfill; bf != nil {
		st.Backfill = &backfillStatus{
			Mode:      bf.Mode,
			Since:     timePtr(bf.Since),
			Until:     timePtr(bf.Until),
			AfterTime: timePtr(bf.AfterTime),
			AfterID:   bf.AfterID,
		}
	}

	return st, nil
}

// timePtr returns t in UTC, or nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// writeStatus prints the report as three aligned sections.
func writeStatus(out io.Writer, r statusReport) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(key, value string) { fmt.Fprintf(w, "  %s\t%s\n", key, value) }

	fmt.Fprintf(w, "Slot %q (database %q)\n", r.Slot.Name, r.Database)
	s := r.Slot
	if !s.Exists {
		row("state", "missing: walrelay run creates it, or a DBA runs walrelay setup")
	} else {
		state := "inactive: no walsender streams from it"
		if s.Active {
			state = "active, held by pid " + strconv.Itoa(int(s.ActivePID))
		}
		row("state", state)
		row("plugin", s.Plugin)
		row("database", s.Database)
		row("confirmed LSN", orNone(s.ConfirmedFlushLSN))
		row("restart LSN", orNone(s.RestartLSN))
		row("lag", formatBytes(s.LagBytes))
		row("wal_status", orNone(s.WALStatus))
		if s.Problem != "" {
			row("problem", s.Problem)
		}
	}

	fmt.Fprintf(w, "\nPublication %q\n", r.Publication.Name)
	switch {
	case !r.Publication.Exists:
		row("tables", "none: the publication is missing (walrelay run or walrelay setup creates it)")
	case len(r.Publication.Tables) == 0:
		row("tables", "none")
	default:
		row("tables", strings.Join(r.Publication.Tables, ", "))
	}

	fmt.Fprintf(w, "\nCheckpoint of slot %q\n", r.Slot.Name)
	c := r.Checkpoint
	switch {
	case !c.TableExists:
		row("state", "table walrelay_checkpoints is missing (walrelay migrate, setup or run creates it)")
	case !c.Found:
		row("state", "none stored yet")
	default:
		row("flushed LSN", c.FlushedLSN)
		row("last commit", formatTime(c.LastCommitTime))
		row("updated", formatTime(c.UpdatedAt))
		row("system id", c.SystemIdentifier)
		row("timeline", strconv.Itoa(int(c.Timeline)))
		if c.SlotCreatedLSN != "" {
			row("slot created", c.SlotCreatedLSN+" at "+formatTime(c.SlotCreatedAt))
		}
		row("backfill", describeBackfill(c.Backfill))
	}

	return w.Flush()
}

// describeBackfill summarizes an owed backfill in one line.
func describeBackfill(b *backfillStatus) string {
	if b == nil {
		return "none owed"
	}

	text := "owed: " + b.Mode + " rows"
	if b.Since != nil {
		text += " created from " + formatTime(b.Since)
	}
	if b.Until != nil {
		text += " until " + formatTime(b.Until)
	}
	if b.AfterID != "" {
		text += fmt.Sprintf("; confirmed up to row %s (%s)", b.AfterID, formatTime(b.AfterTime))
	}
	return text
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func formatTime(t *time.Time) string {
	if t == nil {
		return "none"
	}
	return t.Format(time.RFC3339)
}

// formatBytes prints n in binary units with the exact count.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}

	value, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		value /= unit
		suffix = s
		if value < unit {
			break
		}
	}
	return fmt.Sprintf("%.1f %s (%d bytes)", value, suffix, n)
}
