package decode

// relation is one table as announced by a Relation message. For the outbox
// table it also stores where each configured column sits in the tuple, found
// once per Relation message so that mapping a row does no name lookups.
type relation struct {
	oid             uint32
	namespace       string
	name            string
	replicaIdentity byte
	columns         []relationColumn

	// outbox reports whether this is the configured outbox table. The fields
	// below are set only when it is.
	outbox bool

	// index holds the tuple position of each configured column, or -1 when
	// the table has no such column.
	index columnIndex

	// missing is the first required column the table lacks, or "".
	missing string

	// payloadIsJSON and metadataIsJSON report columns of type json or
	// jsonb, whose text Postgres has already validated, so mapping a row
	// skips the check.
	payloadIsJSON  bool
	metadataIsJSON bool
}

// Type OIDs of the built-in JSON types (pg_type.dat).
const (
	jsonOID  = 114
	jsonbOID = 3802
)

type relationColumn struct {
	flags        byte // 1 when the column is part of the replica identity key
	name         string
	typeOID      uint32
	typeModifier int32
}

type columnIndex struct {
	id, aggregateType, aggregateID, eventType, payload int
	metadata, createdAt, scheduledAt                   int
}

// storeRelation replaces the cached relation with rel's OID and, for the
// outbox table, resolves the configured column names.
func (d *Decoder) storeRelation(rel *relation) {
	if rel.namespace == d.schema && rel.name == d.table {
		rel.outbox = true
		d.resolveColumns(rel)
	}

	d.relations[rel.oid] = rel
}

func (d *Decoder) resolveColumns(rel *relation) {
	c := d.columns
	rel.index = columnIndex{
		id:            rel.columnIndex(c.ID),
		aggregateType: rel.columnIndex(c.AggregateType),
		aggregateID:   rel.columnIndex(c.AggregateID),
		eventType:     rel.columnIndex(c.EventType),
		payload:       rel.columnIndex(c.Payload),
		metadata:      rel.columnIndex(c.Metadata),
		createdAt:     rel.columnIndex(c.CreatedAt),
		scheduledAt:   rel.columnIndex(c.ScheduledAt),
	}

	rel.payloadIsJSON = rel.isJSON(rel.index.payload)
	rel.metadataIsJSON = rel.isJSON(rel.index.metadata)

	required := []struct {
		name  string
		index int
	}{
		{c.ID, rel.index.id},
		{c.AggregateType, rel.index.aggregateType},
		{c.AggregateID, rel.index.aggregateID},
		{c.EventType, rel.index.eventType},
		{c.Payload, rel.index.payload},
	}
	for _, col := range required {
		if col.index < 0 {
			rel.missing = col.name
			return
		}
	}
}

// columnIndex returns the position of the column called name, or -1. An empty
// name is a disabled optional column and is never found.
func (rel *relation) columnIndex(name string) int {
	if name == "" {
		return -1
	}
	for i, col := range rel.columns {
		if col.name == name {
			return i
		}
	}
	return -1
}

// isJSON reports whether column i has type json or jsonb.
func (rel *relation) isJSON(i int) bool {
	if i < 0 {
		return false
	}
	oid := rel.columns[i].typeOID
	return oid == jsonOID || oid == jsonbOID
}
