package config

// The fast path of Parse for files with many services. influxdata/toml
// parses a file into a token tree that it grows by doubling (hundreds of
// MB for 100,000 services) and decodes every struct table by building a
// reflection cache of its type first (once per service). Here the file is
// cut at its [[inputs.service_latency.service]] headers into chunks that
// are parsed on their own, in parallel, and a service table whose keys
// are plain values is decoded with one field cache built once.
//
// It is an optimisation only: whenever anything is not exactly the simple
// shape it handles — a chunk that does not parse, a chunk holding
// anything but service tables, a key it does not decode, any decode
// error —, Parse falls back to parsing and decoding the whole file at
// once, the exact path, so that what is accepted and every error message
// (with its line) is the same as without it.

import (
	"encoding"
	"errors"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/toml"
	"github.com/influxdata/toml/ast"
)

// serviceHeader is the header that starts a chunk, as written (other
// spellings, with inner spaces or quotes, are legal TOML and simply do not
// start a chunk).
const serviceHeader = "[[inputs.service_latency.service]]"

// chunkServices is how many service tables a chunk holds.
const chunkServices = 128

// errSlow: the fast path does not handle this; use the exact one.
var errSlow = errors.New("config: not on the fast path")

// splitServices returns the byte offsets of the lines of src that begin
// a service table, outside strings and arrays, or nil when there are too
// few to matter. The scan knows TOML's strings, comments and arrays well
// enough that a cut is never inside one: were it wrong, the chunk before
// the cut would end inside a string or an array and fail to parse, and
// Parse would fall back.
func splitServices(src string) []int {
	if strings.Count(src, serviceHeader) < 2*chunkServices {
		return nil
	}
	var cuts []int
	depth := 0 // [ ] nesting of values (arrays; inline tables count too)
	i, n := 0, len(src)
	lineStart := true
	for i < n {
		c := src[i]
		if lineStart && depth == 0 {
			j := i
			for j < n && (src[j] == ' ' || src[j] == '\t') {
				j++
			}
			if strings.HasPrefix(src[j:], serviceHeader) && headerRest(src[j+len(serviceHeader):]) {
				cuts = append(cuts, i)
				i = j + len(serviceHeader)
				lineStart = false
				continue
			}
			if j < n && src[j] == '[' {
				// Another header: skip the line (its brackets are not a value).
				k := strings.IndexByte(src[j:], '\n')
				if k < 0 {
					break
				}
				i = j + k + 1
				continue
			}
		}
		lineStart = false
		switch {
		case c == '\n':
			lineStart = true
			i++
		case c == '#':
			k := strings.IndexByte(src[i:], '\n')
			if k < 0 {
				i = n
			} else {
				i += k
			}
		case strings.HasPrefix(src[i:], `"""`):
			i = skipMulti(src, i+3, `"""`, true)
		case strings.HasPrefix(src[i:], `'''`):
			i = skipMulti(src, i+3, `'''`, false)
		case c == '"':
			i++
			for i < n && src[i] != '"' && src[i] != '\n' {
				if src[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case c == '\'':
			i++
			for i < n && src[i] != '\'' && src[i] != '\n' {
				i++
			}
			i++
		case c == '[' || c == '{':
			depth++
			i++
		case c == ']' || c == '}':
			if depth > 0 {
				depth--
			}
			i++
		default:
			i++
		}
	}
	if len(cuts) < 2*chunkServices {
		return nil
	}
	return cuts
}

// headerRest: what follows a header on its line is blank or a comment.
func headerRest(s string) bool {
	for k := 0; k < len(s); k++ {
		switch s[k] {
		case ' ', '\t', '\r':
		case '\n', '#':
			return true
		default:
			return false
		}
	}
	return true
}

// skipMulti returns the offset after the multi-line string that starts at
// i (after its opening delimiter).
func skipMulti(src string, i int, delim string, escapes bool) int {
	for i < len(src) {
		if escapes && src[i] == '\\' {
			i += 2
			continue
		}
		if strings.HasPrefix(src[i:], delim) {
			i += len(delim)
			for i < len(src) && src[i] == delim[0] { // """" ends with the last three
				i++
			}
			return i
		}
		i++
	}
	return len(src)
}

// chunk is a run of at most chunkServices service tables of a file:
// src[start:end], with lines lines before it.
type chunk struct {
	start, end, services, lines int
}

// parseChunked parses src cut at cuts: the part before the first cut as a
// whole file, each run of chunkServices service tables on its own (in
// parallel), their lines shifted to the file's. It returns the plugin
// table (without "service"), the service tables in order and the chunks
// they were parsed from (parseChunks parses them again).
func parseChunked(src string, cuts []int) (*ast.Table, []*ast.Table, []chunk, error) {
	head, err := toml.Parse([]byte(src[:cuts[0]]))
	if err != nil {
		return nil, nil, nil, errSlow
	}
	tbl, err := pluginTable(head)
	if err != nil {
		return nil, nil, nil, errSlow
	}
	if _, ok := tbl.Fields["service"]; ok {
		return nil, nil, nil, errSlow
	}
	chunks := cutChunks(src, cuts)
	services, err := parseChunks(src, chunks, len(cuts))
	if err != nil {
		return nil, nil, nil, err
	}
	return tbl, services, chunks, nil
}

// cutChunks groups the service tables that start at cuts into chunks.
func cutChunks(src string, cuts []int) []chunk {
	var chunks []chunk
	lines, counted := 0, 0 // the lines before src[counted:]
	for k := 0; k < len(cuts); k += chunkServices {
		c := chunk{start: cuts[k], end: len(src), services: min(chunkServices, len(cuts)-k)}
		if k+chunkServices < len(cuts) {
			c.end = cuts[k+chunkServices]
		}
		lines += strings.Count(src[counted:c.start], "\n")
		counted, c.lines = c.start, lines
		chunks = append(chunks, c)
	}
	return chunks
}

// parseChunks parses the chunks of src in parallel: the n service tables
// in order.
func parseChunks(src string, chunks []chunk, n int) ([]*ast.Table, error) {
	tables := make([][]*ast.Table, len(chunks))
	errs := make([]error, len(chunks))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(chunks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c := chunks[i]
				tables[i], errs[i] = parseServiceChunk(src[c.start:c.end], c.services, c.lines)
			}
		}()
	}
	for i := range chunks {
		work <- i
	}
	close(work)
	wg.Wait()
	services := make([]*ast.Table, 0, n)
	for i := range chunks {
		if errs[i] != nil {
			return nil, errs[i]
		}
		services = append(services, tables[i]...)
	}
	return services, nil
}

// parseServiceChunk parses a chunk of want service tables; off is the
// number of lines before it in the file. The hand scanner (fastscan.go)
// takes the common shape; the parser whatever it does not.
func parseServiceChunk(src string, want, off int) ([]*ast.Table, error) {
	if svcs, ok := scanServiceChunk(src, want, off); ok {
		return svcs, nil
	}
	return tomlServiceChunk(src, want, off)
}

// tomlServiceChunk is parseServiceChunk by toml.Parse.
func tomlServiceChunk(src string, want, off int) ([]*ast.Table, error) {
	root, err := toml.Parse([]byte(src))
	if err != nil || len(root.Fields) != 1 {
		return nil, errSlow
	}
	inputs, ok := root.Fields["inputs"].(*ast.Table)
	if !ok || len(inputs.Fields) != 1 {
		return nil, errSlow
	}
	sl, ok := inputs.Fields["service_latency"].(*ast.Table)
	if !ok || len(sl.Fields) != 1 {
		return nil, errSlow
	}
	svcs, ok := sl.Fields["service"].([]*ast.Table)
	if !ok || len(svcs) != want {
		return nil, errSlow
	}
	for _, t := range svcs {
		shiftLines(t, off)
	}
	return svcs, nil
}

// shiftLines adds off to the line of t and of everything in it.
func shiftLines(t *ast.Table, off int) {
	t.Line += off
	for _, v := range t.Fields {
		switch v := v.(type) {
		case *ast.KeyValue:
			v.Line += off
		case *ast.Table:
			shiftLines(v, off)
		case []*ast.Table:
			for _, s := range v {
				shiftLines(s, off)
			}
		}
	}
}

// serviceField is a field of Service that a toml key sets.
type serviceField struct {
	index   []int
	ignored bool
}

// serviceFields is the field cache of Service, built as influxdata/toml
// builds one (named by tag first, else by the normalized field name).
var serviceFields = sync.OnceValue(func() (c struct{ named, auto map[string]serviceField }) {
	c.named, c.auto = map[string]serviceField{}, map[string]serviceField{}
	rt := reflect.TypeOf(Service{})
	var descend func([]int, reflect.Type)
	descend = func(index []int, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			ft := t.Field(i)
			if ft.PkgPath != "" && !ft.Anonymous {
				continue
			}
			col, _, _ := strings.Cut(ft.Tag.Get("toml"), ",")
			col = strings.TrimSpace(col)
			if ft.Anonymous && ft.Type.Kind() == reflect.Struct && col == "" {
				descend(append(append([]int{}, index...), ft.Index...), ft.Type)
				continue
			}
			info := serviceField{index: append(append([]int{}, index...), ft.Index...), ignored: col == "-"}
			if col == "" || col == "-" {
				name := toml.DefaultConfig.NormFieldName(t, ft.Name)
				if _, ok := c.auto[name]; ok {
					info.ignored = true
				}
				c.auto[name] = info
			} else {
				if _, ok := c.named[col]; ok {
					info.ignored = true
				}
				c.named[col] = info
			}
		}
	}
	descend(nil, rt)
	return c
})

var (
	serviceType     = reflect.TypeOf(Service{})
	unmarshalerType = reflect.TypeOf((*toml.Unmarshaler)(nil)).Elem()
	recType         = reflect.TypeOf((*toml.UnmarshalerRec)(nil)).Elem()
	textType        = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	// fastText are the text types set on the fast path (a Secret is not:
	// decoding one has side effects that must happen once).
	fastText = map[reflect.Type]bool{
		reflect.TypeOf(config.Duration(0)): true,
		reflect.TypeOf(config.Size(0)):     true,
	}
)

// decodeService decodes one service table. Keys of plain values (strings,
// integers, booleans, durations and other text values, a table of
// strings) are set directly; a table with any other key is decoded by
// cfg, on its own. Any error is errSlow: the caller then decodes the
// whole file the exact way, for the exact message. s is zero on entry.
func decodeService(cfg *toml.Config, t *ast.Table, s *Service) error {
	if fastService(t, reflect.ValueOf(s).Elem()) {
		return nil
	}
	*s = Service{} // partly set by fastService
	if err := cfg.UnmarshalTable(t, s); err != nil {
		return errSlow
	}
	return nil
}

// fastService sets rv (a Service) from t; false: not a shape it handles
// (rv is then partly set and must be discarded).
func fastService(t *ast.Table, rv reflect.Value) bool {
	fc := serviceFields()
	for key, node := range t.Fields {
		info, ok := fc.named[key]
		if !ok {
			info, ok = fc.auto[toml.DefaultConfig.NormFieldName(serviceType, key)]
		}
		if !ok || info.ignored {
			return false
		}
		fv, err := rv.FieldByIndexErr(info.index)
		if err != nil {
			return false
		}
		for fv.Kind() == reflect.Pointer {
			if fv.IsNil() {
				fv.Set(reflect.New(fv.Type().Elem()))
			}
			fv = fv.Elem()
		}
		switch node := node.(type) {
		case *ast.KeyValue:
			if !setPlain(fv, node.Value) {
				return false
			}
		case *ast.Table:
			if fv.Type() != reflect.TypeOf(map[string]string(nil)) {
				return false
			}
			m := make(map[string]string, len(node.Fields))
			for k, kv := range node.Fields {
				kv, ok := kv.(*ast.KeyValue)
				if !ok {
					return false
				}
				str, ok := kv.Value.(*ast.String)
				if !ok {
					return false
				}
				m[k] = str.Value
			}
			fv.Set(reflect.ValueOf(m))
		default:
			return false
		}
	}
	return true
}

// setPlain sets fv from a plain value as influxdata/toml's setValue would.
func setPlain(fv reflect.Value, v ast.Value) bool {
	pt := reflect.PointerTo(fv.Type())
	if pt.Implements(recType) || pt.Implements(unmarshalerType) {
		return false
	}
	if pt.Implements(textType) {
		if !fastText[fv.Type()] {
			return false // a secret, say: decoded by the library, once
		}
		var data string
		switch v := v.(type) {
		case *ast.Array:
			return false
		case *ast.String:
			data = v.Value
		default:
			data = v.Source()
		}
		return fv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(data)) == nil
	}
	switch v := v.(type) {
	case *ast.String:
		if fv.Kind() != reflect.String {
			return false
		}
		fv.SetString(v.Value)
	case *ast.Integer:
		if fv.Kind() < reflect.Int || fv.Kind() > reflect.Int64 {
			return false
		}
		i, err := strconv.ParseInt(v.Value, 10, int(fv.Type().Size()*8))
		if err != nil {
			return false
		}
		fv.SetInt(i)
	case *ast.Boolean:
		if fv.Kind() != reflect.Bool {
			return false
		}
		b, err := v.Boolean()
		if err != nil {
			return false
		}
		fv.SetBool(b)
	default:
		return false
	}
	return true
}
