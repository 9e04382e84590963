package replication

import "testing"

func TestValidateSlotName(t *testing.T) {
	valid := []string{"walrelay", "a", "slot_1", "0slot", "abcdefghijklmnopqrstuvwxyz_0123456789_abcdefghijklmnopqrstuvwxy"}
	for _, name := range valid {
		if err := ValidateSlotName(name); err != nil {
			t.Errorf("ValidateSlotName(%q) = %v, want nil", name, err)
		}
	}

	invalid := []string{"", "Walrelay", "wal-relay", "wal relay", "walrelay;drop", "slot\"", "é",
		"abcdefghijklmnopqrstuvwxyz_0123456789_abcdefghijklmnopqrstuvwxyz"}
	for _, name := range invalid {
		if err := ValidateSlotName(name); err == nil {
			t.Errorf("ValidateSlotName(%q) = nil, want an error", name)
		}
	}
}

func TestParseTable(t *testing.T) {
	cases := []struct {
		in     string
		want   Table
		quoted string
	}{
		{"outbox_messages", Table{"public", "outbox_messages"}, `"public"."outbox_messages"`},
		{"app.outbox", Table{"app", "outbox"}, `"app"."outbox"`},
		{"App.Outbox", Table{"App", "Outbox"}, `"App"."Outbox"`},
		{`we"ird.t`, Table{`we"ird`, "t"}, `"we""ird"."t"`},
	}
	for _, tc := range cases {
		got, err := ParseTable(tc.in)
		if err != nil {
			t.Fatalf("ParseTable(%q): %v", tc.in, err)
		}
		if got != tc.want {
			t.Errorf("ParseTable(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if q := got.Quoted(); q != tc.quoted {
			t.Errorf("ParseTable(%q).Quoted() = %s, want %s", tc.in, q, tc.quoted)
		}
	}

	for _, bad := range []string{"", ".t", "s.", "a.b.c"} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) = nil error, want one", bad)
		}
	}
}

func TestQuoteLiteral(t *testing.T) {
	cases := map[string]string{
		"walrelay":   "'walrelay'",
		"it's":       "'it''s'",
		"a,b":        "'a,b'",
		"''":         "''''''",
		`back\slash`: `'back\slash'`,
	}
	for in, want := range cases {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}
