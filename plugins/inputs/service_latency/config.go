package service_latency

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"
)

// LoadConfigFile reads the plugin's own config file (the one given to the
// binary with -config) strictly: unknown keys, a second
// [[inputs.service_latency]] table and anything else in the file are errors
// that name the file, the key and the line. ${VAR} is replaced by the
// environment variable VAR, as Telegraf does. The returned plugin has been
// validated (Init has run).
func LoadConfigFile(path string) (*ServiceLatency, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	return p, nil
}

// ParseConfig decodes and validates a plugin config; errors start with the
// line number and a colon ("12: service \"api\": url: ...").
func ParseConfig(data []byte) (*ServiceLatency, error) {
	p, tbl, err := DecodeConfig(data)
	if err != nil {
		return nil, err
	}
	if err := p.Init(); err != nil {
		return nil, withLine(tbl, err)
	}
	return p, nil
}

// DecodeConfig decodes a plugin config without validating it, returning
// the plugin table's AST for error positions.
func DecodeConfig(data []byte) (*ServiceLatency, *ast.Table, error) {
	root, err := toml.Parse([]byte(expandEnv(string(data))))
	if err != nil {
		return nil, nil, fmt.Errorf("%s", lineFirst(err))
	}
	tbl, err := pluginTable(root)
	if err != nil {
		return nil, nil, err
	}
	p := New()
	cfg := toml.Config{
		NormFieldName: toml.DefaultConfig.NormFieldName,
		FieldToKey:    toml.DefaultConfig.FieldToKey,
		MissingField: func(typ reflect.Type, key string) error {
			return fmt.Errorf("unknown key %q in %s", key, tableName(typ))
		},
	}
	if err := cfg.UnmarshalTable(tbl, p); err != nil {
		return nil, nil, fmt.Errorf("%s", lineFirst(err))
	}
	return p, tbl, nil
}

func tableName(typ reflect.Type) string {
	switch typ {
	case reflect.TypeOf(ServiceLatency{}):
		return "[[inputs.service_latency]]"
	case reflect.TypeOf(Service{}):
		return "[[inputs.service_latency.service]]"
	}
	return "[" + typ.String() + "]"
}

func pluginTable(root *ast.Table) (*ast.Table, error) {
	var other []string
	for k := range root.Fields {
		if k != "inputs" {
			other = append(other, k)
		}
	}
	if len(other) > 0 {
		sort.Strings(other)
		k := other[0]
		return nil, fmt.Errorf("%d: unexpected %q: this file holds only [[inputs.service_latency]]; agent options (interval, tags, name_override) belong on the [[inputs.execd]] block of telegraf.conf", fieldLine(root.Fields[k]), k)
	}
	inputsAny, ok := root.Fields["inputs"]
	if !ok {
		return nil, errors.New("1: no [[inputs.service_latency]] table in the file")
	}
	inputsTbl, ok := inputsAny.(*ast.Table)
	if !ok {
		return nil, fmt.Errorf("%d: \"inputs\" must be a table", fieldLine(inputsAny))
	}
	for k, v := range inputsTbl.Fields {
		if k != "service_latency" {
			return nil, fmt.Errorf("%d: unexpected [[inputs.%s]]: this binary runs only inputs.service_latency", fieldLine(v), k)
		}
	}
	switch v := inputsTbl.Fields["service_latency"].(type) {
	case []*ast.Table:
		if len(v) > 1 {
			return nil, fmt.Errorf("%d: a second [[inputs.service_latency]] table: the binary runs exactly one; put every service in the first table (or run another [[inputs.execd]])", v[1].Line)
		}
		return v[0], nil
	case *ast.Table:
		return nil, fmt.Errorf("%d: [inputs.service_latency] must be an array table: write [[inputs.service_latency]]", v.Line)
	case nil:
		return nil, errors.New("1: no [[inputs.service_latency]] table in the file")
	default:
		return nil, fmt.Errorf("%d: inputs.service_latency must be a table", fieldLine(v))
	}
}

// withLine prefixes a validation error with the line of the key (or of the
// service table) it names.
func withLine(tbl *ast.Table, err error) error {
	var ce *ConfigError
	if !errors.As(err, &ce) {
		return fmt.Errorf("%d: %w", tbl.Line, err)
	}
	t := tbl
	if ce.Service >= 0 {
		if svcs, ok := tbl.Fields["service"].([]*ast.Table); ok && ce.Service < len(svcs) {
			t = svcs[ce.Service]
		}
	}
	line := t.Line
	keys := []string{ce.Key}
	if ce.Key == "" {
		keys = candidateKeys(ce.Err.Error())
	}
	for _, key := range keys {
		if v, ok := t.Fields[key]; ok {
			line = fieldLine(v)
			break
		}
		if ce.Service >= 0 {
			// a key inherited from the plugin level
			if v, ok := tbl.Fields[key]; ok {
				line = fieldLine(v)
				break
			}
		}
	}
	return fmt.Errorf("%d: %w", line, err)
}

var (
	leadingKeyRE = regexp.MustCompile(`^([a-z_0-9]+): `)
	quotedKeyRE  = regexp.MustCompile(`"([a-z_0-9]+)"`)
)

// candidateKeys returns the toml keys an error message names: the one it
// starts with ("url: ..."), then any quoted ones ("invalid \"window\" 0").
func candidateKeys(msg string) []string {
	var keys []string
	if m := leadingKeyRE.FindStringSubmatch(msg); m != nil {
		keys = append(keys, m[1])
	}
	for _, m := range quotedKeyRE.FindAllStringSubmatch(msg, -1) {
		keys = append(keys, m[1])
	}
	return keys
}

func fieldLine(v interface{}) int {
	switch av := v.(type) {
	case *ast.KeyValue:
		return av.Line
	case *ast.Table:
		return av.Line
	case []*ast.Table:
		if len(av) > 0 {
			return av[0].Line
		}
	}
	return 0
}

// lineFirst turns the toml package's "line 12: msg" into "12: msg".
func lineFirst(err error) string {
	var le *toml.LineError
	if errors.As(err, &le) {
		msg := le.Err.Error()
		return fmt.Sprintf("%d: %s", le.Line, msg)
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "toml: line "); ok {
		return rest
	}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return rest
	}
	return msg
}

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} with the environment's VAR (only the braced
// form, so a "$" in a regex stays what it is). Quotes and backslashes in
// the value are escaped as Telegraf's shim does, and newlines are escaped
// so line numbers stay true.
func expandEnv(s string) string {
	esc := strings.NewReplacer(`"`, `\"`, `\`, `\\`, "\n", `\n`)
	return envRE.ReplaceAllStringFunc(s, func(m string) string {
		return esc.Replace(os.Getenv(m[2 : len(m)-1]))
	})
}
