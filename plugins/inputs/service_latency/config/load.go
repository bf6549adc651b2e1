package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"

	"github.com/service-latency/service_latency/plugins/inputs/service_latency/internal/redact"
	"github.com/service-latency/service_latency/plugins/inputs/service_latency/store"
)

// File is a loaded config file: the decoded Config and the syntax tree
// that locates its keys.
type File struct {
	// Path is the file's path ("" for Parse).
	Path   string
	Config Config
	table  *ast.Table
	// reparse, when set, makes the service tables of table again: the
	// fast path drops their syntax tree once decoded (the biggest part of
	// the heap while 100,000 services are compiled) and only an error to
	// locate needs it again.
	reparse func() ([]*ast.Table, error)
}

// Load reads the plugin's own config file (the binary's -config) strictly:
// unknown keys, a second [[inputs.service_latency]] table, anything else in
// the file, an unset ${VAR} and a secret that points at a secret store
// (the binary has none) are errors that name the file, the key and the
// line. ${VAR} is replaced by the environment variable VAR, as Telegraf
// does. A UTF-8 byte order mark is ignored. Load decodes; Compile
// validates.
func Load(path string) (*File, error) {
	src, err := readFileString(path)
	if err != nil {
		return nil, err
	}
	f, err := parseSource(src)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	f.Path = path
	return f, nil
}

// Parse is Load for a config in memory; errors start with the line number
// and a colon ("12: service \"api\": url: ...").
func Parse(data []byte) (*File, error) {
	return parseSource(string(data))
}

// readFileString reads a file into a string without the copy of a
// []byte conversion (the config's strings are substrings of it).
func readFileString(path string) (string, error) {
	file, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer file.Close()
	var b strings.Builder
	if st, err := file.Stat(); err == nil && st.Size() > 0 {
		b.Grow(int(st.Size()) + 1) // +1: the read that sees the end
	}
	if _, err := io.Copy(&b, file); err != nil {
		return "", err
	}
	return b.String(), nil
}

// parseSource is Parse of the file's text.
func parseSource(src string) (*File, error) {
	src, err := expandEnv(strings.TrimPrefix(src, "\xef\xbb\xbf"))
	if err != nil {
		return nil, err
	}
	if cuts := splitServices(src); cuts != nil {
		if f, err := parseFast(src, cuts); err == nil {
			return f, nil
		}
	}
	root, err := toml.Parse([]byte(src))
	if err != nil {
		return nil, errors.New(lineFirst(err, src))
	}
	tbl, err := pluginTable(root)
	if err != nil {
		return nil, err
	}
	f := &File{Config: Default(), table: tbl}
	if err := decoder.UnmarshalTable(tbl, &f.Config); err != nil {
		return nil, errors.New(lineFirst(err, src))
	}
	if err := unlinkedSecrets(&f.Config); err != nil {
		return nil, f.Locate(err)
	}
	return f, nil
}

// decoder is the strict decoder: an unknown key is an error naming it.
var decoder = &toml.Config{
	NormFieldName: toml.DefaultConfig.NormFieldName,
	FieldToKey:    toml.DefaultConfig.FieldToKey,
	MissingField: func(typ reflect.Type, key string) error {
		return fmt.Errorf("unknown key %q in %s", key, tableName(typ))
	},
}

// parseFast is Parse for a file of many services (see fastload.go): any
// error means "take the exact path", which gives the error.
func parseFast(src string, cuts []int) (*File, error) {
	tbl, svcTables, chunks, err := parseChunked(src, cuts)
	if err != nil {
		return nil, err
	}
	// The plugin table, whose services (as one parse would give them)
	// are made again when an error is to be located.
	full := *tbl
	full.Fields = make(map[string]interface{}, len(tbl.Fields)+1)
	for k, v := range tbl.Fields {
		full.Fields[k] = v
	}
	f := &File{Config: Default(), table: &full}
	f.reparse = func() ([]*ast.Table, error) { return parseChunks(src, chunks, len(cuts)) }
	if err := decoder.UnmarshalTable(tbl, &f.Config); err != nil {
		return nil, errSlow
	}
	// The services in one allocation: 100,000 of them are 100,000
	// allocations of the same size otherwise.
	slab := make([]Service, len(svcTables))
	f.Config.Services = make([]*Service, len(svcTables))
	for i, t := range svcTables {
		if err := decodeService(decoder, t, &slab[i]); err != nil {
			return nil, err
		}
		f.Config.Services[i] = &slab[i]
	}
	if err := unlinkedSecrets(&f.Config); err != nil {
		return nil, errSlow
	}
	return f, nil
}

// Locate prefixes an error about this file's config with the file and the
// line of the key (or of the table) it names: "path:12: msg". Errors that
// name no key get the plugin table's line.
func (f *File) Locate(err error) error {
	line := f.table.Line
	var ce *Error
	if errors.As(err, &ce) {
		line = f.line(ce)
	}
	msg := redact.Text(err.Error())
	if f.Path == "" {
		return fmt.Errorf("%d: %s", line, msg)
	}
	return fmt.Errorf("%s:%d: %s", f.Path, line, msg)
}

// line finds the line of the key an Error names: in its service's table,
// else (an inherited key) in the plugin table, else the table's own line.
func (f *File) line(ce *Error) int {
	f.restoreServices()
	tables := []*ast.Table{f.table}
	if ce.Service >= 0 {
		if svcs, ok := f.table.Fields["service"].([]*ast.Table); ok && ce.Service < len(svcs) {
			tables = []*ast.Table{svcs[ce.Service], f.table}
		}
	}
	if ce.Key != "" {
		for _, t := range tables {
			if l := keyLine(t, strings.Split(ce.Key, ".")); l > 0 {
				return l
			}
		}
	}
	return tables[0].Line
}

// restoreServices puts the service tables the fast path dropped back
// into the plugin table (once; they parsed before, and parse the same).
func (f *File) restoreServices() {
	if f.reparse == nil {
		return
	}
	if svcs, err := f.reparse(); err == nil {
		f.table.Fields["service"] = svcs
	}
	f.reparse = nil
}

// keyLine is the line of a dotted key path in t (0: absent). A path that
// runs into a sub-table without the rest of its keys gives the sub-table's
// line.
func keyLine(t *ast.Table, path []string) int {
	v, ok := t.Fields[path[0]]
	if !ok {
		return 0
	}
	if sub, ok := v.(*ast.Table); ok && len(path) > 1 {
		if l := keyLine(sub, path[1:]); l > 0 {
			return l
		}
		return sub.Line
	}
	return fieldLine(v)
}

func tableName(typ reflect.Type) string {
	switch typ {
	case reflect.TypeOf(Config{}):
		return "[[inputs.service_latency]]"
	case reflect.TypeOf(Service{}):
		return "[[inputs.service_latency.service]]"
	case reflect.TypeOf(store.RedisConfig{}), reflect.TypeOf(RedisTable{}):
		return "[inputs.service_latency.redis]"
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

// keyOnLine matches the key of a "key = value" line.
var keyOnLine = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)\s*=`)

// lineFirst turns the toml package's "line 12: msg" into "12: key: msg",
// naming the key written on that line when there is one (the parser's and
// the decoder's own messages do not: "cannot unmarshal TOML integer into
// float64", "array can't contain multiple types").
func lineFirst(err error, src string) string {
	line, msg := 0, err.Error()
	var le *toml.LineError
	if errors.As(err, &le) {
		line, msg = le.Line, le.Err.Error()
	} else {
		rest, _ := strings.CutPrefix(msg, "toml: ")
		rest, _ = strings.CutPrefix(rest, "line ")
		if n, tail, ok := strings.Cut(rest, ":"); ok {
			if _, err := fmt.Sscanf(n, "%d", &line); err == nil {
				msg = strings.TrimSpace(tail)
			}
		}
	}
	msg = strings.ReplaceAll(redact.Text(msg), "\n", " ")
	if line <= 0 {
		return "1: " + msg
	}
	lines := strings.SplitN(src, "\n", line+1)
	if line <= len(lines) {
		if m := keyOnLine.FindStringSubmatch(lines[line-1]); m != nil && !strings.HasPrefix(msg, m[1]+":") && !strings.Contains(msg, `"`+m[1]+`"`) {
			msg = m[1] + ": " + msg
		}
	}
	return fmt.Sprintf("%d: %s", line, msg)
}

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} with the environment's VAR (only the braced
// form, so a "$" in a regex stays what it is). Quotes and backslashes in
// the value are escaped as Telegraf's shim does, and newlines are escaped
// so line numbers stay true. An unset VAR is an error naming it and its
// line (outside comments): strict is the promise, and an empty value
// would silently change what is probed.
func expandEnv(s string) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil // nothing to expand: no copy of a large file
	}
	esc := strings.NewReplacer(`"`, `\"`, `\`, `\\`, "\n", `\n`)
	var missing error
	out := envRE.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := os.LookupEnv(name)
		if !ok && missing == nil {
			at := strings.Index(s, m) // the first use is the one to name
			lineStart := strings.LastIndexByte(s[:at], '\n') + 1
			if !strings.HasPrefix(strings.TrimSpace(s[lineStart:at]), "#") {
				line := strings.Count(s[:at], "\n") + 1
				key := ""
				if km := keyOnLine.FindStringSubmatch(s[lineStart:]); km != nil {
					key = km[1] + ": "
				}
				missing = fmt.Errorf("%d: %s${%s}: the environment variable %s is not set (set it, or write the value in the file)", line, key, name, name)
			}
		}
		return esc.Replace(v)
	})
	return out, missing
}

// unlinkedSecrets refuses a secret that references a secret store
// (@{store:key}): Telegraf resolves those, the binary has no secret stores
// and would fail at the first use.
func unlinkedSecrets(c *Config) error {
	var found error
	path := make([]string, 0, 8) // deeper than any key path: appends reuse it
	walkSecrets(reflect.ValueOf(c).Elem(), path, func(path []string, s *config.Secret) {
		if found != nil || len(s.GetUnlinked()) == 0 {
			return
		}
		err := fmt.Errorf("references a secret store (%s), but the service_latency binary has no secret stores: write the value, or use ${ENV_VAR}", strings.Join(s.GetUnlinked(), ", "))
		if path[0] == "service" {
			found = &Error{Service: mustAtoi(path[1]), Name: c.Services[mustAtoi(path[1])].Name, Key: strings.Join(path[2:], "."), Err: err}
			return
		}
		found = pluginErr(strings.Join(path, "."), err)
	})
	return found
}

var secretType = reflect.TypeOf(config.Secret{})

// walkSecrets calls fn for every config.Secret reachable from v, with its
// toml key path ("redis", "password"; "service", "3", "bearer_token"),
// which fn must copy to keep.
func walkSecrets(v reflect.Value, path []string, fn func([]string, *config.Secret)) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walkSecrets(v.Elem(), path, fn)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			walkSecrets(v.Index(i), append(path, strconv.Itoa(i)), fn)
		}
	case reflect.Struct:
		if v.Type() == secretType {
			if v.CanAddr() {
				fn(path, v.Addr().Interface().(*config.Secret))
			}
			return
		}
		for _, sf := range secretFields(v.Type()) {
			if sf.anonymous {
				walkSecrets(v.Field(sf.index), path, fn)
				continue
			}
			// path's spare capacity is reused from field to field: fn
			// gets a path that is valid only during the call.
			walkSecrets(v.Field(sf.index), append(path, sf.key), fn)
		}
	}
}

// secretField is a field of a struct that can hold a config.Secret.
type secretField struct {
	index     int
	key       string
	anonymous bool
}

var secretPlans sync.Map // reflect.Type → []secretField

// secretFields lists, once per struct type, the exported fields (not
// toml:"-") whose type can hold a config.Secret: walkSecrets visits only
// those (100,000 services are 100,000 Service structs).
func secretFields(t reflect.Type) []secretField {
	if p, ok := secretPlans.Load(t); ok {
		return p.([]secretField)
	}
	var plan []secretField
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() || !canHoldSecret(sf.Type, map[reflect.Type]bool{}) {
			continue
		}
		if sf.Anonymous {
			plan = append(plan, secretField{index: i, anonymous: true})
			continue
		}
		key := tomlKey(t, sf)
		if key == "-" {
			continue
		}
		plan = append(plan, secretField{index: i, key: key})
	}
	secretPlans.Store(t, plan)
	return plan
}

// canHoldSecret: a value of type t can reach a config.Secret through
// pointers, slices and struct fields (what walkSecrets follows). An
// interface might hold anything.
func canHoldSecret(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == secretType {
		return true
	}
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice:
		return canHoldSecret(t.Elem(), seen)
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if sf := t.Field(i); sf.IsExported() && canHoldSecret(sf.Type, seen) {
				return true
			}
		}
	}
	return false
}

// tomlKey is a struct field's toml key.
func tomlKey(parent reflect.Type, sf reflect.StructField) string {
	if tag, _, _ := strings.Cut(sf.Tag.Get("toml"), ","); tag != "" {
		return tag
	}
	return toml.DefaultConfig.FieldToKey(parent, sf.Name)
}

func mustAtoi(s string) int {
	var n int
	fmt.Sscanf(s, "%d", &n)
	return n
}
