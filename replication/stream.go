package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// writeTimeout bounds every write on the replication connection, so that a
// stalled TCP connection surfaces as an error instead of a hung goroutine.
const writeTimeout = 10 * time.Second

// Stream is a replication connection (replication=database) to Postgres.
type Stream struct {
	conn *pgconn.PgConn

	// deadline is the read deadline last set by Receive, which sets it
	// again only when it changes, because each change resets a timer.
	deadline time.Time
}

// Dial opens a replication connection. The session runs with TimeZone=UTC
// and DateStyle=ISO, so that the decoder reads timestamps in one format.
func Dial(ctx context.Context, connString string) (*Stream, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("invalid Postgres URL: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["DateStyle"] = "ISO"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "walrelay"
	}

	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection to %s:%d: %w", cfg.Host, cfg.Port, err)
	}

	return &Stream{conn: conn}, nil
}

// Close closes the connection; the walsender ends and releases the slot.
func (s *Stream) Close(ctx context.Context) error {
	return s.conn.Close(ctx)
}

// BackendPID returns the pid of the walsender serving this connection.
func (s *Stream) BackendPID() uint32 {
	return s.conn.PID()
}

// IdentifySystem returns the server's system identifier, timeline and
// current WAL position.
func (s *Stream) IdentifySystem(ctx context.Context) (pglogrepl.IdentifySystemResult, error) {
	res, err := pglogrepl.IdentifySystem(ctx, s.conn)
	if err != nil {
		return res, fmt.Errorf("identify system: %w", err)
	}

	return res, nil
}

// CreatedSlot is the result of CreateSlot.
type CreatedSlot struct {
	ConsistentPoint pglogrepl.LSN
	// SnapshotName is the exported snapshot, valid only until the next
	// command on this Stream; empty unless requested.
	SnapshotName string
}

// ErrSlotExists is returned by CreateSlot when the slot already exists.
var ErrSlotExists = errors.New("replication slot already exists")

// CreateSlot creates a pgoutput slot called name. With exportSnapshot the
// server exports a snapshot that contains exactly the transactions
// committed before the slot's consistent point. With failover the slot is created with
// the FAILOVER option, which needs PostgreSQL 17.
func (s *Stream) CreateSlot(ctx context.Context, name string, exportSnapshot, failover bool) (CreatedSlot, error) {
	if err := ValidateSlotName(name); err != nil {
		return CreatedSlot{}, err
	}

	var sql string
	if failover {
		snapshot := "nothing"
		if exportSnapshot {
			snapshot = "export"
		}
		sql = fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL %s (SNAPSHOT '%s', FAILOVER true)", name, OutputPlugin, snapshot)
	} else {
		// The options-free form works on every supported version (14+).
		action := "NOEXPORT_SNAPSHOT"
		if exportSnapshot {
			action = "EXPORT_SNAPSHOT"
		}
		sql = fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL %s %s", name, OutputPlugin, action)
	}

	res, err := pglogrepl.ParseCreateReplicationSlot(s.conn.Exec(ctx, sql))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" {
		return CreatedSlot{}, fmt.Errorf("create replication slot %q: %w", name, ErrSlotExists)
	}
	if err != nil {
		return CreatedSlot{}, fmt.Errorf("create replication slot %q: %w", name, err)
	}

	point, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return CreatedSlot{}, fmt.Errorf("create replication slot %q: consistent point %q: %w", name, res.ConsistentPoint, err)
	}

	return CreatedSlot{ConsistentPoint: point, SnapshotName: res.SnapshotName}, nil
}

// ErrSlotActive is wrapped by Start's error when another walsender still
// holds the slot; retrying after it exits succeeds.
var ErrSlotActive = errors.New("replication slot is active")

// Start runs START_REPLICATION on slot from start with pgoutput protocol
// version 1, the given publications and logical decoding messages enabled.
// The server starts from the slot's confirmed_flush_lsn when start is older.
func (s *Stream) Start(ctx context.Context, slot string, publications []string, start pglogrepl.LSN) error {
	// pgoutput splits publication_names like an identifier list: unquoted
	// names are folded to lower case, so each is quoted as an identifier.
	quoted := make([]string, len(publications))
	for i, p := range publications {
		quoted[i] = quoteIdent(p)
	}

	args := []string{
		"proto_version '1'",
		"publication_names " + quoteLiteral(strings.Join(quoted, ",")),
		"messages 'true'",
	}

	err := pglogrepl.StartReplication(ctx, s.conn, slot, start, pglogrepl.StartReplicationOptions{PluginArgs: args})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55006" {
		return fmt.Errorf("start replication on slot %q: %w: %s; another walrelay or client streams from the slot, "+
			"and this process retries as a standby until the slot is free", slot, ErrSlotActive, pgErr.Message)
	}
	if errors.As(err, &pgErr) && pgErr.Code == "42704" {
		return fmt.Errorf("start replication on slot %q: %w", slot, ErrSlotNotFound)
	}
	if err != nil {
		return fmt.Errorf("start replication on slot %q at %s: %w", slot, start, err)
	}

	return nil
}

// MessageKind is the kind of message Receive returned.
type MessageKind uint8

const (
	// KindTimeout means the deadline passed without a message.
	KindTimeout MessageKind = iota
	// KindXLogData carries WAL data from the plugin.
	KindXLogData
	// KindKeepalive is a primary keepalive.
	KindKeepalive
)

// Message is one message of the replication stream.
type Message struct {
	Kind     MessageKind
	WALStart pglogrepl.LSN // XLogData: where Data starts
	// ServerWALEnd is the server's sent position; for a keepalive every
	// change before it has been sent on this connection.
	ServerWALEnd   pglogrepl.LSN
	ServerTime     time.Time
	ReplyRequested bool // keepalive: the server wants a status update now

	// Data is valid only until the next Receive.
	Data []byte
}

// ErrStreamEnded is returned by Receive when the server ends the stream.
var ErrStreamEnded = errors.New("replication stream ended by the server")

// Receive waits until deadline for the next message. It returns a
// KindTimeout message when the deadline passes; any other error means the
// connection is unusable.
func (s *Stream) Receive(deadline time.Time) (Message, error) {
	if !deadline.Equal(s.deadline) {
		if err := s.conn.Conn().SetReadDeadline(deadline); err != nil {
			return Message{}, fmt.Errorf("set read deadline: %w", err)
		}
		s.deadline = deadline
	}

	raw, err := s.conn.ReceiveMessage(context.Background())
	if err != nil {
		if pgconn.Timeout(err) || isNetTimeout(err) {
			return Message{Kind: KindTimeout}, nil
		}
		return Message{}, fmt.Errorf("receive replication message: %w", err)
	}

	switch msg := raw.(type) {
	case *pgproto3.CopyData:
		return parseCopyData(msg.Data)
	case *pgproto3.ErrorResponse:
		return Message{}, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
	case *pgproto3.CopyDone, *pgproto3.CommandComplete, *pgproto3.ReadyForQuery:
		return Message{}, ErrStreamEnded
	default:
		// Notices and parameter status changes carry nothing for the relay.
		return Message{Kind: KindTimeout}, nil
	}
}

func parseCopyData(data []byte) (Message, error) {
	if len(data) == 0 {
		return Message{}, fmt.Errorf("replication stream: empty CopyData message")
	}

	switch data[0] {
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return Message{}, fmt.Errorf("replication stream: parse XLogData: %w", err)
		}
		return Message{
			Kind:         KindXLogData,
			WALStart:     x.WALStart,
			ServerWALEnd: x.ServerWALEnd,
			ServerTime:   x.ServerTime,
			Data:         x.WALData,
		}, nil
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return Message{}, fmt.Errorf("replication stream: parse keepalive: %w", err)
		}
		return Message{
			Kind:           KindKeepalive,
			ServerWALEnd:   k.ServerWALEnd,
			ServerTime:     k.ServerTime,
			ReplyRequested: k.ReplyRequested,
		}, nil
	default:
		return Message{Kind: KindTimeout}, nil
	}
}

// SendStatus reports flushed as the written, flushed and applied position.
// With replyRequested the server replies with a keepalive at once, which
// proves the connection is alive.
func (s *Stream) SendStatus(flushed pglogrepl.LSN, replyRequested bool) error {
	if err := s.conn.Conn().SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}

	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: flushed,
		WALFlushPosition: flushed,
		WALApplyPosition: flushed,
		ClientTime:       time.Now(),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status at %s: %w", flushed, err)
	}

	return nil
}

func isNetTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}
