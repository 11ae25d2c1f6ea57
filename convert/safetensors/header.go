package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderSize bounds the JSON header, as the reference implementation does
// (safetensors MAX_HEADER_SIZE, 100 MB): a larger length prefix is treated as
// corruption rather than an allocation request.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header key holding the string-to-string metadata.
const metadataKey = "__metadata__"

// Info describes one tensor of a file.
type Info struct {
	Name  string
	DType DType
	Shape []int // row-major dimensions; empty for a scalar
	// Begin and End are the tensor's data_offsets: byte offsets relative to the
	// start of the data buffer (just after the header), End exclusive.
	Begin, End int64
	// File is the path of the file holding the tensor (a shard, for a Set).
	File string
}

// NumElements is the product of the dimensions (1 for a scalar).
func (in Info) NumElements() int {
	n := 1
	for _, d := range in.Shape {
		n *= d
	}
	return n
}

// header is a parsed and validated safetensors header.
type header struct {
	infos map[string]Info
	names []string // sorted
	meta  map[string]string
	data  int64 // offset of the data buffer in the file: 8 + header length
}

// formatErr builds an error naming the file and, when non-empty, the tensor.
func formatErr(path, tensor, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if tensor != "" {
		return fmt.Errorf("safetensors: %s: tensor %q: %s: %w", path, tensor, msg, ErrFormat)
	}
	return fmt.Errorf("safetensors: %s: %s: %w", path, msg, ErrFormat)
}

// parse validates the framing of a whole file image b (length prefix, header,
// data buffer) and returns its header. path only names the file in errors.
func parse(path string, b []byte) (*header, error) {
	if len(b) < 8 {
		return nil, formatErr(path, "", "file is %d bytes, shorter than the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeaderSize {
		return nil, formatErr(path, "", "header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return nil, formatErr(path, "", "header length %d runs past the end of the %d-byte file (truncated?)", n, len(b))
	}
	h, err := parseHeader(path, b[8:8+n], int64(len(b))-8-int64(n))
	if err != nil {
		return nil, err
	}
	h.data = 8 + int64(n)
	return h, nil
}

// parseHeader parses the JSON header hdr and checks every tensor against a data
// buffer of dataLen bytes. It walks JSON tokens rather than unmarshalling into a
// map so that a repeated key is an error instead of silently keeping the last.
func parseHeader(path string, hdr []byte, dataLen int64) (*header, error) {
	if !utf8.Valid(hdr) {
		return nil, formatErr(path, "", "header is not valid UTF-8")
	}
	if len(hdr) == 0 || hdr[0] != '{' {
		return nil, formatErr(path, "", "header does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // the '{' checked above
		return nil, formatErr(path, "", "header JSON: %v", err)
	}
	h := &header{infos: make(map[string]Info)}
	sawMeta := false
	for dec.More() {
		key, err := stringToken(dec)
		if err != nil {
			return nil, formatErr(path, "", "header JSON: %v", err)
		}
		if key == metadataKey {
			if sawMeta {
				return nil, formatErr(path, "", "duplicate %q key", metadataKey)
			}
			sawMeta = true
			if h.meta, err = parseMetadata(dec); err != nil {
				return nil, formatErr(path, "", "%s: %v", metadataKey, err)
			}
			continue
		}
		if _, dup := h.infos[key]; dup {
			return nil, formatErr(path, key, "duplicate tensor name in header")
		}
		info, err := parseInfo(dec, key)
		if err != nil {
			return nil, formatErr(path, key, "%v", err)
		}
		info.File = path
		if err := checkSpan(info, dataLen); err != nil {
			return nil, formatErr(path, key, "%v", err)
		}
		h.infos[key] = info
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, formatErr(path, "", "header JSON: %v", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		return nil, formatErr(path, "", "unexpected content after the header object (%v %v)", tok, err)
	}
	h.names = make([]string, 0, len(h.infos))
	for name := range h.infos {
		h.names = append(h.names, name)
	}
	slices.Sort(h.names)
	if err := checkTiling(h, dataLen); err != nil {
		return nil, formatErr(path, "", "%v", err)
	}
	return h, nil
}

// stringToken reads one token that must be a string.
func stringToken(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("expected a string, got %v", tok)
	}
	return s, nil
}

// expectDelim reads one token that must be the delimiter d.
func expectDelim(dec *json.Decoder, d json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return fmt.Errorf("%s: expected %q, got %v", what, d, tok)
	}
	return nil
}

// parseMetadata reads the __metadata__ value: null or an object of strings.
func parseMetadata(dec *json.Decoder) (map[string]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("expected an object, got %v", tok)
	}
	meta := make(map[string]string)
	for dec.More() {
		k, err := stringToken(dec)
		if err != nil {
			return nil, err
		}
		v, err := stringToken(dec)
		if err != nil {
			return nil, fmt.Errorf("key %q: %v (values must be strings)", k, err)
		}
		if _, dup := meta[k]; dup {
			return nil, fmt.Errorf("duplicate key %q", k)
		}
		meta[k] = v
	}
	return meta, expectDelim(dec, '}', "metadata")
}

// parseInfo reads one tensor entry {"dtype", "shape", "data_offsets"}. Unknown
// fields are skipped, so a future header field does not make files unreadable.
func parseInfo(dec *json.Decoder, name string) (Info, error) {
	info := Info{Name: name}
	if err := expectDelim(dec, '{', "tensor entry"); err != nil {
		return info, err
	}
	seen := map[string]bool{}
	for dec.More() {
		k, err := stringToken(dec)
		if err != nil {
			return info, err
		}
		if seen[k] {
			return info, fmt.Errorf("duplicate field %q", k)
		}
		seen[k] = true
		switch k {
		case "dtype":
			s, err := stringToken(dec)
			if err != nil {
				return info, fmt.Errorf("dtype: %v", err)
			}
			info.DType = DType(s)
			if !info.DType.Valid() {
				return info, fmt.Errorf("unknown dtype %q", s)
			}
		case "shape":
			dims, err := intArray(dec, "shape")
			if err != nil {
				return info, err
			}
			info.Shape = make([]int, len(dims))
			for i, d := range dims {
				if d > math.MaxInt {
					return info, fmt.Errorf("shape dimension %d too large", d)
				}
				info.Shape[i] = int(d)
			}
		case "data_offsets":
			offs, err := intArray(dec, "data_offsets")
			if err != nil {
				return info, err
			}
			if len(offs) != 2 {
				return info, fmt.Errorf("data_offsets has %d values, want 2", len(offs))
			}
			info.Begin, info.End = offs[0], offs[1]
		default:
			if err := skipValue(dec); err != nil {
				return info, err
			}
		}
	}
	for _, f := range []string{"dtype", "shape", "data_offsets"} {
		if !seen[f] {
			return info, fmt.Errorf("missing field %q", f)
		}
	}
	return info, expectDelim(dec, '}', "tensor entry")
}

// intArray reads an array of non-negative integers that fit in int64.
func intArray(dec *json.Decoder, what string) ([]int64, error) {
	if err := expectDelim(dec, '[', what); err != nil {
		return nil, err
	}
	var out []int64
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s: expected an integer, got %v", what, tok)
		}
		v, err := strconv.ParseInt(string(num), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is not a 64-bit integer", what, num)
		}
		if v < 0 {
			return nil, fmt.Errorf("%s: negative value %d", what, v)
		}
		out = append(out, v)
	}
	return out, expectDelim(dec, ']', what)
}

// skipValue consumes one JSON value of any kind.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// checkSpan verifies that the tensor's offsets lie in the data buffer and that
// its byte span equals elements x dtype width, with overflow-checked products.
func checkSpan(info Info, dataLen int64) error {
	if info.Begin > info.End {
		return fmt.Errorf("data_offsets [%d, %d] are reversed", info.Begin, info.End)
	}
	if info.End > dataLen {
		return fmt.Errorf("data_offsets [%d, %d] run past the %d-byte data buffer", info.Begin, info.End, dataLen)
	}
	size := uint64(info.DType.Size())
	for _, d := range info.Shape {
		hi, lo := bits.Mul64(size, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return fmt.Errorf("shape %v x %s overflows", info.Shape, info.DType)
		}
		size = lo
	}
	if span := uint64(info.End - info.Begin); span != size {
		return fmt.Errorf("shape %v x %s is %d bytes but data_offsets [%d, %d] span %d", info.Shape, info.DType, size, info.Begin, info.End, span)
	}
	return nil
}

// checkTiling verifies that the tensors cover the data buffer exactly once:
// sorted by offset, each begins where the previous ended, and the last ends at
// the end of the buffer.
func checkTiling(h *header, dataLen int64) error {
	byOff := make([]Info, 0, len(h.infos))
	for _, name := range h.names {
		byOff = append(byOff, h.infos[name])
	}
	slices.SortStableFunc(byOff, func(a, b Info) int {
		if a.Begin != b.Begin {
			return cmpInt64(a.Begin, b.Begin)
		}
		return cmpInt64(a.End, b.End)
	})
	var at int64
	prev := ""
	for _, in := range byOff {
		switch {
		case in.Begin < at:
			return fmt.Errorf("tensor %q (data_offsets [%d, %d]) overlaps tensor %q", in.Name, in.Begin, in.End, prev)
		case in.Begin > at:
			return fmt.Errorf("gap of %d bytes before tensor %q (data_offsets [%d, %d])", in.Begin-at, in.Name, in.Begin, in.End)
		}
		at, prev = in.End, in.Name
	}
	if at != dataLen {
		return fmt.Errorf("data buffer is %d bytes but the tensors cover %d (%d trailing bytes)", dataLen, at, dataLen-at)
	}
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
