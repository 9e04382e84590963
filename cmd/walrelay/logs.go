package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// Repeated warnings: the first warnBurst warnings with the same message in
// a warnPeriod are logged, and the first one after the period reports how
// many were dropped.
const (
	warnBurst  = 5
	warnPeriod = time.Minute
)

// minSecretLength is the shortest password that logs are scrubbed of;
// replacing shorter strings would garble ordinary words.
const minSecretLength = 4

// logOptions are the logging flags every command shares, and the secrets
// that the logs must not contain.
type logOptions struct {
	level   string
	format  string
	secrets []string
}

// choiceValue is a string flag that accepts one of a fixed set of values.
type choiceValue struct {
	value   *string
	choices []string
}

func newChoiceValue(p *string, value string, choices ...string) *choiceValue {
	*p = value
	return &choiceValue{value: p, choices: choices}
}

func (c *choiceValue) Set(s string) error {
	if !slices.Contains(c.choices, s) {
		return fmt.Errorf("want %s or %s", strings.Join(c.choices[:len(c.choices)-1], ", "), c.choices[len(c.choices)-1])
	}
	*c.value = s
	return nil
}

func (c *choiceValue) String() string { return *c.value }

func (c *choiceValue) Type() string { return "string" }

// newLogger builds the logger from the shared flags. Format auto means
// console when out is a terminal, else JSON. The logger scrubs opts.secrets
// and rate-limits repeated warnings.
func newLogger(opts *logOptions, out io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(opts.level)
	if err != nil || opts.level == "" {
		return zerolog.Logger{}, fmt.Errorf("invalid log level %q: want debug, info, warn or error", opts.level)
	}

	format := opts.format
	if format == "auto" {
		format = "json"
		if isTerminal(out) {
			format = "console"
		}
	}
	switch format {
	case "json":
	case "console":
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339}
	default:
		return zerolog.Logger{}, fmt.Errorf("invalid log format %q: want auto, json or console", opts.format)
	}

	limited := newWarnLimiter(out, warnBurst, warnPeriod, time.Now)
	w := newRedactor(limited, opts.secrets)

	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
}

// urlSecrets returns the passwords in the values of the flags whose name
// ends in -url: the user-info password of a URL, and for --pg-url also the
// password of the key=value form or of PGPASSWORD.
func urlSecrets(flags *pflag.FlagSet) []string {
	var secrets []string

	flags.VisitAll(func(f *pflag.Flag) {
		if !strings.HasSuffix(f.Name, "-url") {
			return
		}
		values := []string{f.Value.String()}
		if slice, ok := f.Value.(pflag.SliceValue); ok {
			values = slice.GetSlice()
		}
		for _, v := range values {
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if p, ok := u.User.Password(); ok {
					secrets = append(secrets, p)
				}
			}
			if f.Name == "pg-url" {
				if cfg, err := pgconn.ParseConfig(v); err == nil {
					secrets = append(secrets, cfg.Password)
				}
			}
		}
	})

	return secrets
}

// redactor replaces secrets in every log line with "xxxxx", in the forms
// they take in a URL and in JSON.
type redactor struct {
	out      io.Writer
	replacer *strings.Replacer
}

func newRedactor(out io.Writer, secrets []string) io.Writer {
	var pairs []string
	seen := make(map[string]bool)
	for _, s := range secrets {
		if len(s) < minSecretLength {
			continue
		}
		quoted, _ := json.Marshal(s)
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s), string(quoted[1 : len(quoted)-1])} {
			if !seen[form] {
				seen[form] = true
				pairs = append(pairs, form, "xxxxx")
			}
		}
	}
	if len(pairs) == 0 {
		return out
	}

	return &redactor{out: out, replacer: strings.NewReplacer(pairs...)}
}

func (r *redactor) Write(p []byte) (int, error) {
	if _, err := r.out.Write([]byte(r.replacer.Replace(string(p)))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteLevel keeps the level for the warning limiter behind the redactor.
func (r *redactor) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	redacted := []byte(r.replacer.Replace(string(p)))
	var err error
	if lw, ok := r.out.(zerolog.LevelWriter); ok {
		_, err = lw.WriteLevel(level, redacted)
	} else {
		_, err = r.out.Write(redacted)
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// warnLimiter passes at most burst warnings with the same message per
// period. The first warning with that message after the period is preceded
// by a line that counts the dropped ones. Other levels pass unchanged.
type warnLimiter struct {
	out    io.Writer
	burst  int
	period time.Duration
	now    func() time.Time

	mu      sync.Mutex
	windows map[string]*warnWindow
}

type warnWindow struct {
	start      time.Time
	logged     int
	suppressed int
}

// maxWarnWindows bounds the limiter's memory; windows of ended periods are
// dropped when it is reached.
const maxWarnWindows = 1000

func newWarnLimiter(out io.Writer, burst int, period time.Duration, now func() time.Time) *warnLimiter {
	return &warnLimiter{out: out, burst: burst, period: period, now: now, windows: make(map[string]*warnWindow)}
}

func (w *warnLimiter) Write(p []byte) (int, error) {
	return w.out.Write(p)
}

func (w *warnLimiter) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	if level != zerolog.WarnLevel {
		return w.out.Write(p)
	}

	var event struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(p), &event); err != nil {
		return w.out.Write(p)
	}

	w.mu.Lock()
	defer w.mu.Unlock()

	now := w.now()
	win := w.windows[event.Message]
	if win != nil && now.Sub(win.start) < w.period {
		if win.logged >= w.burst {
			win.suppressed++
			return len(p), nil
		}
		win.logged++
		return w.out.Write(p)
	}

	if win != nil && win.suppressed > 0 {
		summary := zerolog.New(w.out).With().Timestamp().Logger()
		summary.Warn().Str("repeated_message", event.Message).Int("suppressed", win.suppressed).
			Dur("period", w.period).Msg("repeated warnings were not logged")
	}
	w.evictEnded(now)
	w.windows[event.Message] = &warnWindow{start: now, logged: 1}

	return w.out.Write(p)
}

// evictEnded drops windows whose period ended once the map is full. Their
// suppressed counts are lost, which only happens with over maxWarnWindows
// distinct warning messages.
func (w *warnLimiter) evictEnded(now time.Time) {
	if len(w.windows) < maxWarnWindows {
		return
	}
	for message, win := range w.windows {
		if now.Sub(win.start) >= w.period {
			delete(w.windows, message)
		}
	}
}
