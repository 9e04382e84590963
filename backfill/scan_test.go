package backfill

import (
	"strings"
	"testing"
	"time"
)

var eventForge = Columns{
	ID: "id", AggregateType: "aggregate_type", AggregateID: "aggregate_id", EventType: "event_type",
	Payload: "payload", Metadata: "metadata", CreatedAt: "created_at", ScheduledAt: "scheduled_at", Status: "status",
}

func TestBuildQueryFilters(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	filter := Filter{
		Statuses:      []string{"pending", "failed"},
		Since:         since,
		AggregateType: "order",
		After:         Key{CreatedAt: since, ID: "x"},
	}

	sql, args, err := buildQuery(`"public"."outbox_messages"`, eventForge, filter, false)
	if err != nil {
		t.Fatal(err)
	}

	for _, want := range []string{
		`"status"::text = ANY($1::text[])`,
		`"created_at" >= $2`,
		`"aggregate_type"::text = $3`,
		`("created_at", "id"::text) > ($4, $5)`,
		`ORDER BY "created_at", "id"::text`,
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("query lacks %s:\n%s", want, sql)
		}
	}
	if len(args) != 5 {
		t.Errorf("%d arguments, want 5: %v", len(args), args)
	}
}

func TestBuildQueryMissingColumns(t *testing.T) {
	debezium := Columns{ID: "id", AggregateType: "aggregatetype", AggregateID: "aggregateid", EventType: "type", Payload: "payload"}

	if _, _, err := buildQuery("t", debezium, Filter{Statuses: []string{"pending"}}, false); err == nil ||
		!strings.Contains(err.Error(), "no status column") {
		t.Errorf("status filter on a table without status: error %v", err)
	}
	if _, _, err := buildQuery("t", debezium, Filter{Since: time.Now()}, false); err == nil ||
		!strings.Contains(err.Error(), "no creation time column") {
		t.Errorf("time filter on a table without created_at: error %v", err)
	}

	sql, _, err := buildQuery("t", debezium, Filter{}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NULL::text", "NULL::timestamptz", `ORDER BY "id"::text`} {
		if !strings.Contains(sql, want) {
			t.Errorf("query lacks %s:\n%s", want, sql)
		}
	}
}

func TestBuildQueryCount(t *testing.T) {
	sql, _, err := buildQuery("t", eventForge, Filter{EventType: "created"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sql, "SELECT count(*) FROM t WHERE ") || strings.Contains(sql, "ORDER BY") {
		t.Errorf("count query = %s", sql)
	}
}
