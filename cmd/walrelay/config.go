package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/walrelay/walrelay/bench"
)

// configFlag names the flag (and, as WALRELAY_CONFIG, the variable) that
// points at the optional YAML settings file.
const configFlag = "config"

// applySettings fills every flag of cmd that was not given on the command
// line, first from the config file and then from its WALRELAY_* variable, so
// the precedence is flag, then environment, then file, then default. It
// then checks the values whose range the flag type cannot express. Every
// error names the key, the value and what is allowed.
func applySettings(cmd *cobra.Command) error {
	flags := cmd.Flags()
	sources := make(map[string]valueSource)

	path, err := configPath(flags)
	if err != nil {
		return err
	}
	if path != "" {
		settings, err := readConfigFile(path)
		if err != nil {
			return err
		}
		if err := applyFile(cmd, path, settings, sources); err != nil {
			return err
		}
	}

	if err := applyEnv(flags, sources); err != nil {
		return err
	}

	flags.Visit(func(f *pflag.Flag) { sources[f.Name] = valueSource{} })

	return checkLimits(flags, sources)
}

// configPath returns --config, else WALRELAY_CONFIG, else "".
func configPath(flags *pflag.FlagSet) (string, error) {
	f := flags.Lookup(configFlag)
	if f == nil {
		return "", nil
	}
	if f.Changed {
		return f.Value.String(), nil
	}

	path := os.Getenv(envName(configFlag))
	if err := f.Value.Set(path); err != nil {
		return "", err
	}
	return path, nil
}

// setting is one key of the config file.
type setting struct {
	key    string
	values []string // one value, or the items of a list
	list   bool
	line   int
}

// readConfigFile parses the YAML file at path: a mapping from flag names
// (without --) to single values, or to lists for flags that take several.
func readConfigFile(path string) ([]setting, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config file %s is not valid YAML: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s line %d: want a mapping of flag names to values, such as \"slot: walrelay\"",
			path, root.Line)
	}

	var settings []setting
	seen := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		keyNode, valueNode := root.Content[i], root.Content[i+1]
		key := keyNode.Value

		if first, dup := seen[key]; dup {
			return nil, fmt.Errorf("config file %s line %d: key %q is already set on line %d", path, keyNode.Line, key, first)
		}
		seen[key] = keyNode.Line

		s, err := settingFromNode(key, valueNode)
		if err != nil {
			return nil, fmt.Errorf("config file %s line %d: %w", path, valueNode.Line, err)
		}
		settings = append(settings, s)
	}

	return settings, nil
}

func settingFromNode(key string, n *yaml.Node) (setting, error) {
	s := setting{key: key, line: n.Line}

	switch {
	case n.Kind == yaml.ScalarNode && n.Tag != "!!null":
		s.values = []string{n.Value}
	case n.Kind == yaml.SequenceNode:
		s.list = true
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return s, fmt.Errorf("%s: every list item must be a single value", key)
			}
			s.values = append(s.values, item.Value)
		}
	default:
		return s, fmt.Errorf("%s has no value: give a string, number, duration or true/false, or remove the key", key)
	}

	return s, nil
}

// applyFile sets the flags of cmd that the file names and the command line
// does not. It skips keys of flags that only other walrelay commands have,
// so one file serves every command. A key that no command has is an error.
func applyFile(cmd *cobra.Command, path string, settings []setting, sources map[string]valueSource) error {
	known := allFlagNames(cmd.Root())
	flags := cmd.Flags()

	for _, s := range settings {
		if s.key == configFlag {
			return fmt.Errorf("config file %s line %d: %q cannot be set inside the config file", path, s.line, s.key)
		}
		if !known[s.key] {
			return fmt.Errorf("config file %s line %d: unknown key %q: use a flag name without the leading --, such as max-in-flight",
				path, s.line, s.key)
		}

		f := flags.Lookup(s.key)
		if f == nil || f.Changed {
			continue
		}

		source := valueSource{file: path, line: s.line}
		if err := setFlag(f, s.values, s.list); err != nil {
			return fmt.Errorf("invalid %s: %s", source.describe(f.Name, strings.Join(s.values, ",")), allowedValues(f, err))
		}
		sources[f.Name] = source
	}

	return nil
}

// setFlag replaces the flag's value with values. A list goes only to a
// flag that takes several values.
func setFlag(f *pflag.Flag, values []string, list bool) error {
	slice, isSlice := f.Value.(pflag.SliceValue)
	if list && !isSlice {
		return errors.New("a list is not allowed here")
	}
	if isSlice {
		if list {
			return slice.Replace(values)
		}
		// Set would append to a value an earlier source set.
		if err := slice.Replace(nil); err != nil {
			return err
		}
	}

	return f.Value.Set(values[0])
}

// applyEnv sets every flag that was not given on the command line from its
// WALRELAY_* environment variable, replacing a value from the config file.
func applyEnv(flags *pflag.FlagSet, sources map[string]valueSource) error {
	var firstErr error

	flags.VisitAll(func(f *pflag.Flag) {
		if f.Changed || firstErr != nil || f.Name == configFlag {
			return
		}
		name := envName(f.Name)
		value, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		source := valueSource{env: name}
		if err := setFlag(f, []string{value}, false); err != nil {
			firstErr = fmt.Errorf("invalid %s: %s", source.describe(f.Name, value), allowedValues(f, err))
			return
		}
		sources[f.Name] = source
	})

	return firstErr
}

// envName returns the environment variable of the flag called name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// allFlagNames returns the names of the flags of every command under root.
func allFlagNames(root *cobra.Command) map[string]bool {
	names := make(map[string]bool)

	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		add := func(f *pflag.Flag) {
			if f.Name != "help" {
				names[f.Name] = true
			}
		}
		c.LocalFlags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	return names
}

// allowedValues turns a flag's parse error into what the flag accepts.
func allowedValues(f *pflag.Flag, err error) string {
	switch f.Value.Type() {
	case "duration":
		return "want a duration such as 500ms, 10s or 1m30s"
	case "int", "int64", "uint", "uint64":
		return "want a whole number"
	case "bool":
		return "want true or false"
	}

	return err.Error()
}

// flagError is the command tree's flag error function: it names the flag,
// the value and what the flag accepts.
func flagError(_ *cobra.Command, err error) error {
	var invalid *pflag.InvalidValueError
	if errors.As(err, &invalid) {
		f := invalid.GetFlag()
		return fmt.Errorf("invalid %s: %s", valueSource{}.describe(f.Name, invalid.GetValue()), allowedValues(f, invalid.Unwrap()))
	}

	return err
}

// limit checks the value of one flag beyond what its type enforces, and
// returns what is allowed when the value is out of range.
type limit func(value string) (ok bool, allowed string)

// flagLimits bounds flags whose type accepts values the relay rejects. The
// relay checks the same bounds again; checking here lets the error name the
// flag, variable or file line the value came from.
var flagLimits = map[string]limit{
	"max-in-flight":    intRange(1, 1_000_000),
	"status-interval":  durationRange(100*time.Millisecond, 10*time.Minute),
	"shutdown-timeout": durationRange(0, 24*time.Hour),
	"http-addr":        hostPort,

	// The bench flags. Their Go configuration reads 0 as the default, so a
	// 0 given by the user must be rejected here.
	"rows":          intRange(1, 10_000_000),
	"rss-rows":      intRange(1, 10_000_000),
	"payload-bytes": intRange(1, 64<<20),
	"connections":   intRange(1, 64),
	"duration":      durationRange(100*time.Millisecond, 24*time.Hour),
	"rounds":        oddRange(1, 99),
	"scenarios":     scenarioList,
}

// checkLimits applies flagLimits to the flags of this command whose value
// came from a source other than the default.
func checkLimits(flags *pflag.FlagSet, sources map[string]valueSource) error {
	names := make([]string, 0, len(sources))
	for name := range sources {
		names = append(names, name)
	}
	slices.Sort(names)

	for _, name := range names {
		check, ok := flagLimits[name]
		f := flags.Lookup(name)
		if !ok || f == nil {
			continue
		}
		value := f.Value.String()
		if ok, allowed := check(value); !ok {
			return fmt.Errorf("invalid %s: %s", sources[name].describe(name, value), allowed)
		}
	}

	return nil
}

// valueSource is the origin of a flag's value: the command line (the zero
// value), a WALRELAY_* variable or a line of the config file.
type valueSource struct {
	env  string
	file string
	line int
}

// describe names the flag's key and value as the user wrote them.
func (s valueSource) describe(flag, value string) string {
	switch {
	case s.env != "":
		return fmt.Sprintf("%s=%q", s.env, value)
	case s.file != "":
		return fmt.Sprintf("%s %q in %s line %d", flag, value, s.file, s.line)
	}
	return fmt.Sprintf("--%s %q", flag, value)
}

func intRange(lo, hi int) limit {
	return func(value string) (bool, string) {
		n, err := strconv.Atoi(value)
		return err == nil && n >= lo && n <= hi, fmt.Sprintf("want a whole number from %d to %d", lo, hi)
	}
}

func oddRange(lo, hi int) limit {
	return func(value string) (bool, string) {
		n, err := strconv.Atoi(value)
		return err == nil && n >= lo && n <= hi && n%2 == 1,
			fmt.Sprintf("want an odd number from %d to %d, so that one round is the median", lo, hi)
	}
}

// scenarioList accepts a comma-separated list of benchmark scenarios.
func scenarioList(value string) (bool, string) {
	allowed := "want one or more of " + strings.Join(bench.Scenarios(), ",") + ", separated by commas"
	if strings.TrimSpace(value) == "" {
		return false, allowed
	}
	for _, name := range strings.Split(value, ",") {
		if name = strings.TrimSpace(name); !slices.Contains(bench.Scenarios(), name) {
			return false, fmt.Sprintf("%q is not a scenario: %s", name, allowed)
		}
	}
	return true, ""
}

func durationRange(lo, hi time.Duration) limit {
	return func(value string) (bool, string) {
		d, err := time.ParseDuration(value)
		return err == nil && d >= lo && d <= hi, fmt.Sprintf("want a duration from %s to %s", lo, hi)
	}
}

// hostPort accepts host:port with a numeric port, or "" (disabled).
func hostPort(value string) (bool, string) {
	const allowed = "want host:port, such as 127.0.0.1:9188 or :9188, or an empty value to disable the server"
	if value == "" {
		return true, allowed
	}

	_, port, err := net.SplitHostPort(value)
	if err != nil {
		return false, allowed
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535, allowed
}
