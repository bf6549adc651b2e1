package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The Redis script packs the scalar state with Redis' cmsgpack: a
// MessagePack array of integers, float32/float64, strings and arrays. This
// decodes that subset (nil, booleans and maps too, to refuse them cleanly).

var errShortMsgpack = errors.New("msgpack: truncated")

// mpMaxDepth bounds the nesting of a decoded value (the blob has two
// levels).
const mpMaxDepth = 4

// mpDecode decodes one MessagePack value: int64, float64, string, bool, nil
// or []interface{}.
func mpDecode(b []byte) (interface{}, error) {
	v, rest, err := mpValue(b, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("msgpack: %d bytes after the value", len(rest))
	}
	return v, nil
}

func mpValue(b []byte, depth int) (interface{}, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errShortMsgpack
	}
	c, b := b[0], b[1:]
	need := func(n int) ([]byte, []byte, error) {
		if len(b) < n {
			return nil, nil, errShortMsgpack
		}
		return b[:n], b[n:], nil
	}
	uint_ := func(n int) (uint64, []byte, error) {
		x, rest, err := need(n)
		if err != nil {
			return 0, nil, err
		}
		var u uint64
		for _, c := range x {
			u = u<<8 | uint64(c)
		}
		return u, rest, nil
	}
	str := func(n uint64, rest []byte) (interface{}, []byte, error) {
		if uint64(len(rest)) < n {
			return nil, nil, errShortMsgpack
		}
		return string(rest[:n]), rest[n:], nil
	}
	array := func(n uint64, rest []byte) (interface{}, []byte, error) {
		if depth >= mpMaxDepth {
			return nil, nil, errors.New("msgpack: nested too deep")
		}
		if n > uint64(len(rest)) { // every element takes a byte at least
			return nil, nil, errShortMsgpack
		}
		out := make([]interface{}, n)
		for i := range out {
			var err error
			out[i], rest, err = mpValue(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
		}
		return out, rest, nil
	}
	switch {
	case c <= 0x7f:
		return int64(c), b, nil
	case c >= 0xe0:
		return int64(int8(c)), b, nil
	case c >= 0xa0 && c <= 0xbf:
		return str(uint64(c&0x1f), b)
	case c >= 0x90 && c <= 0x9f:
		return array(uint64(c&0x0f), b)
	case c >= 0x80 && c <= 0x8f:
		return nil, nil, errors.New("msgpack: a map")
	}
	switch c {
	case 0xc0:
		return nil, b, nil
	case 0xc2:
		return false, b, nil
	case 0xc3:
		return true, b, nil
	case 0xca:
		u, rest, err := uint_(4)
		return float64(math.Float32frombits(uint32(u))), rest, err
	case 0xcb:
		u, rest, err := uint_(8)
		return math.Float64frombits(u), rest, err
	case 0xcc, 0xcd, 0xce, 0xcf:
		u, rest, err := uint_(1 << (c - 0xcc))
		if err != nil {
			return nil, nil, err
		}
		if u > math.MaxInt64 {
			return float64(u), rest, nil
		}
		return int64(u), rest, nil
	case 0xd0:
		x, rest, err := need(1)
		if err != nil {
			return nil, nil, err
		}
		return int64(int8(x[0])), rest, nil
	case 0xd1:
		x, rest, err := need(2)
		if err != nil {
			return nil, nil, err
		}
		return int64(int16(binary.BigEndian.Uint16(x))), rest, nil
	case 0xd2:
		x, rest, err := need(4)
		if err != nil {
			return nil, nil, err
		}
		return int64(int32(binary.BigEndian.Uint32(x))), rest, nil
	case 0xd3:
		x, rest, err := need(8)
		if err != nil {
			return nil, nil, err
		}
		return int64(binary.BigEndian.Uint64(x)), rest, nil
	case 0xd9, 0xda, 0xdb:
		n, rest, err := uint_(1 << (c - 0xd9))
		if err != nil {
			return nil, nil, err
		}
		return str(n, rest)
	case 0xdc, 0xdd:
		n, rest, err := uint_(2 << (c - 0xdc))
		if err != nil {
			return nil, nil, err
		}
		return array(n, rest)
	}
	return nil, nil, fmt.Errorf("msgpack: type byte %#x", c)
}
