package config

// A hand scanner for the one shape nearly every service table has: one
// `key = value` per line, the value a basic or literal string, an
// integer, a float, a boolean, an array of strings or an inline table of
// strings, with blank lines and comments. It builds the very nodes
// influxdata/toml's PEG parser builds for such a chunk (the same tables,
// keys, values, lines, positions and source runes — fastscan_test.go
// compares them, and fuzzes the scanner against the parser), at a small
// part of the parser's cost: the parser grows a token tree for every
// character and converts the chunk to runes several times over.
//
// It handles nothing it is not sure of: any other byte, line or value —
// non-ASCII, a carriage return, an escape, a multi-line string, a
// datetime, a quoted or dotted key, an underscore in a number, an
// exponent, a trailing comma, a repeated key, any other table header —
// and it returns false, and the chunk goes to the parser as before.

import (
	"strings"

	"github.com/influxdata/toml/ast"
)

// chunkScanner scans one chunk of service tables.
type chunkScanner struct {
	src   string
	runes []rune // src as runes (ASCII: rune i is byte i), for the nodes' Data
	// line is the file's line number of the line being scanned.
	line   int
	tables []*ast.Table
	// cur is the table being filled; curEnd is where its source span
	// ends so far: the PEG parser's table expression runs from the
	// header through the key/value lines that follow it, and stops at
	// the first comment-only line (inRun false from there on).
	cur    *ast.Table
	curEnd int
	inRun  bool
}

// scanServiceChunk returns the want service tables of src, a chunk
// starting with a service header, as toml.Parse would give them with
// their lines shifted by off; ok is false when src is not all in the
// shape it handles (see the file comment).
func scanServiceChunk(src string, want, off int) ([]*ast.Table, bool) {
	runes, ok := asciiRunes(src)
	if !ok {
		return nil, false
	}
	s := &chunkScanner{src: src, runes: runes, line: off, tables: make([]*ast.Table, 0, want)}
	for pos := 0; pos < len(src); {
		end := strings.IndexByte(src[pos:], '\n')
		if end < 0 {
			end = len(src)
		} else {
			end += pos
		}
		s.line++
		if !s.scanLine(pos, end) {
			return nil, false
		}
		pos = end + 1
	}
	s.closeTable()
	if len(s.tables) != want {
		return nil, false
	}
	return s.tables, true
}

// asciiRunes is src as runes, or false when src holds a byte the scanner
// does not take anywhere: non-ASCII, DEL, or a control character other
// than tab and newline (a carriage return among them: the parser counts
// "\r\n" as two lines).
func asciiRunes(src string) ([]rune, bool) {
	runes := make([]rune, len(src))
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c >= 0x7f || (c < ' ' && c != '\t' && c != '\n') {
			return nil, false
		}
		runes[i] = rune(c)
	}
	return runes, true
}

// scanLine scans the line src[start:end] (without its newline).
func (s *chunkScanner) scanLine(start, end int) bool {
	i := skipBlank(s.src, start, end)
	switch {
	case i == end: // blank: the table's run goes on past it
		return true
	case s.src[i] == '#': // a comment line ends the table's run
		s.inRun = false
		return true
	case s.src[i] == '[':
		return s.scanHeader(start, i, end)
	}
	if s.cur == nil {
		return false
	}
	if !s.scanKeyValue(s.cur, i, end) {
		return false
	}
	if s.inRun {
		s.curEnd = end // the run's key/value takes its trailing blanks and comment
	}
	return true
}

// scanHeader starts a table at a service header at src[i:]; lineStart is
// where its line begins (the table's source span starts there, with the
// indentation).
func (s *chunkScanner) scanHeader(lineStart, i, end int) bool {
	if !strings.HasPrefix(s.src[i:end], serviceHeader) || !restOfLine(s.src, i+len(serviceHeader), end) {
		return false
	}
	s.closeTable()
	s.cur = &ast.Table{
		Position: ast.Position{Begin: lineStart},
		Line:     s.line,
		Name:     "service",
		Fields:   map[string]interface{}{},
		Type:     ast.TableTypeArray,
	}
	s.curEnd, s.inRun = end, true
	return true
}

// closeTable ends the current table's source span and keeps the table.
func (s *chunkScanner) closeTable() {
	if s.cur == nil {
		return
	}
	s.cur.Position.End = s.curEnd
	s.cur.Data = s.runes[s.cur.Position.Begin:s.curEnd]
	s.tables = append(s.tables, s.cur)
	s.cur = nil
}

// scanKeyValue scans `key = value` at src[i:end] into t, the rest of the
// line blank or a comment.
func (s *chunkScanner) scanKeyValue(t *ast.Table, i, end int) bool {
	key, i, ok := s.scanKeyEq(i, end)
	if !ok {
		return false
	}
	if _, dup := t.Fields[key]; dup {
		return false // the parser's conflict error, from the exact path
	}
	if i < end && s.src[i] == '{' {
		inline, j, ok := s.scanInlineTable(key, i, end)
		if !ok || !restOfLine(s.src, j, end) {
			return false
		}
		t.Fields[key] = inline
		return true
	}
	v, j, ok := s.scanValue(i, end)
	if !ok || !restOfLine(s.src, j, end) {
		return false
	}
	t.Fields[key] = &ast.KeyValue{Key: key, Value: v, Line: s.line}
	return true
}

// scanKeyEq scans a bare key, "=" and the blanks around it; i is then at
// the value.
func (s *chunkScanner) scanKeyEq(i, end int) (key string, next int, ok bool) {
	k := i
	for k < end && isBareKeyByte(s.src[k]) {
		k++
	}
	if k == i {
		return "", 0, false
	}
	key = s.src[i:k]
	k = skipBlank(s.src, k, end)
	if k == end || s.src[k] != '=' {
		return "", 0, false
	}
	return key, skipBlank(s.src, k+1, end), true
}

// scanInlineTable scans `{ k = "v", ... }` at src[i:], at least one key,
// string values, commas between (none trailing). The parser makes it a
// table named by its key, on the key's line, with no position or source.
func (s *chunkScanner) scanInlineTable(name string, i, end int) (*ast.Table, int, bool) {
	t := &ast.Table{Line: s.line, Name: name, Fields: map[string]interface{}{}, Type: ast.TableTypeNormal}
	i = skipBlank(s.src, i+1, end)
	for {
		key, j, ok := s.scanKeyEq(i, end)
		if !ok {
			return nil, 0, false
		}
		if _, dup := t.Fields[key]; dup {
			return nil, 0, false
		}
		v, j, ok := s.scanString(j, end)
		if !ok {
			return nil, 0, false
		}
		t.Fields[key] = &ast.KeyValue{Key: key, Value: v, Line: s.line}
		j = skipBlank(s.src, j, end)
		switch {
		case j < end && s.src[j] == '}':
			return t, j + 1, true
		case j < end && s.src[j] == ',':
			i = skipBlank(s.src, j+1, end)
		default:
			return nil, 0, false
		}
	}
}

// scanValue scans a value at src[i:end]: a string, a boolean, a number or
// an array of strings. next is just past it.
func (s *chunkScanner) scanValue(i, end int) (v ast.Value, next int, ok bool) {
	if i == end {
		return nil, 0, false
	}
	switch c := s.src[i]; {
	case c == '"' || c == '\'':
		return s.scanString(i, end)
	case c == '[':
		return s.scanStringArray(i, end)
	case c == 't' || c == 'f':
		return s.scanBool(i, end)
	case c == '-' || c == '+' || ('0' <= c && c <= '9'):
		return s.scanNumber(i, end)
	}
	return nil, 0, false
}

// scanString scans a one-line basic string without escapes or a literal
// string: the parser's Value is then the text between the quotes.
func (s *chunkScanner) scanString(i, end int) (*ast.String, int, bool) {
	if i >= end {
		return nil, 0, false
	}
	q := s.src[i]
	if (q != '"' && q != '\'') || strings.HasPrefix(s.src[i:end], string([]byte{q, q, q})) {
		return nil, 0, false // not a string, or a multi-line one
	}
	k := i + 1
	for ; k < end && s.src[k] != q; k++ {
		// A tab is legal in a literal string but not in a basic one: take
		// neither. A backslash escapes in a basic string: not taken.
		if c := s.src[k]; c < ' ' || c == '\\' {
			return nil, 0, false
		}
	}
	if k == end {
		return nil, 0, false
	}
	return &ast.String{
		Position: ast.Position{Begin: i, End: k + 1},
		Value:    s.src[i+1 : k],
		Data:     s.runes[i : k+1],
	}, k + 1, true
}

// scanStringArray scans `["a", 'b']` (or `[]`) on one line, commas
// between the strings and none trailing.
func (s *chunkScanner) scanStringArray(i, end int) (*ast.Array, int, bool) {
	arr := &ast.Array{}
	k := skipBlank(s.src, i+1, end)
	if k < end && s.src[k] == ']' {
		return s.closeArray(arr, i, k), k + 1, true
	}
	for {
		str, j, ok := s.scanString(k, end)
		if !ok {
			return nil, 0, false
		}
		arr.Value = append(arr.Value, str)
		j = skipBlank(s.src, j, end)
		switch {
		case j < end && s.src[j] == ']':
			return s.closeArray(arr, i, j), j + 1, true
		case j < end && s.src[j] == ',':
			k = skipBlank(s.src, j+1, end)
		default:
			return nil, 0, false
		}
	}
}

func (s *chunkScanner) closeArray(arr *ast.Array, open, closing int) *ast.Array {
	arr.Position = ast.Position{Begin: open, End: closing + 1}
	arr.Data = s.runes[open : closing+1]
	return arr
}

// scanBool scans true or false (what follows is the caller's to check:
// "trueish" is not a boolean).
func (s *chunkScanner) scanBool(i, end int) (*ast.Boolean, int, bool) {
	for _, word := range [...]string{"true", "false"} {
		if strings.HasPrefix(s.src[i:end], word) {
			j := i + len(word)
			return &ast.Boolean{Position: ast.Position{Begin: i, End: j}, Value: word, Data: s.runes[i:j]}, j, true
		}
	}
	return nil, 0, false
}

// scanNumber scans an integer ([+-]?, 0 or no leading zero) or a float
// with a fraction, without underscores or an exponent. A number followed
// by '-' or ':' (a datetime), 'e', '_' or another digit after a 0 is left
// to the caller's check of what follows, which refuses it.
func (s *chunkScanner) scanNumber(i, end int) (ast.Value, int, bool) {
	k := i
	if s.src[k] == '-' || s.src[k] == '+' {
		k++
	}
	digits := func(from int) int {
		for from < end && '0' <= s.src[from] && s.src[from] <= '9' {
			from++
		}
		return from
	}
	if k == end || s.src[k] < '0' || s.src[k] > '9' {
		return nil, 0, false
	}
	if s.src[k] == '0' {
		k++ // "0", and nothing may follow but a fraction
	} else {
		k = digits(k)
	}
	if k < end && s.src[k] == '.' {
		f := digits(k + 1)
		if f == k+1 {
			return nil, 0, false
		}
		return &ast.Float{Position: ast.Position{Begin: i, End: f}, Value: s.src[i:f], Data: s.runes[i:f]}, f, true
	}
	return &ast.Integer{Position: ast.Position{Begin: i, End: k}, Value: s.src[i:k], Data: s.runes[i:k]}, k, true
}

// restOfLine: src[i:end] is blanks, then the end or a comment.
func restOfLine(src string, i, end int) bool {
	i = skipBlank(src, i, end)
	return i == end || src[i] == '#'
}

// skipBlank returns the index of the first byte at or after i that is
// not a space or a tab (end if none).
func skipBlank(src string, i, end int) int {
	for i < end && (src[i] == ' ' || src[i] == '\t') {
		i++
	}
	return i
}

func isBareKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}
