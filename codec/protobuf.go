package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

//go:generate go run ../flow/flowjson/internal/gen -protobuf zz_protobuf.go

// The binary encoder in zz_protobuf.go is generated from the schema's
// descriptors: it writes the bytes proto.Marshal writes (same field order,
// zero values omitted, UTF-8 checked, unknown fields kept) in a single pass,
// without reflection and without the separate size pass protobuf-go needs.

// ErrInvalidUTF8 is returned for a string field that is not valid UTF-8,
// which proto.Marshal refuses as well.
var ErrInvalidUTF8 = errors.New("string field contains invalid UTF-8")

func invalidUTF8(field string) error { return fmt.Errorf("%s: %w", field, ErrInvalidUTF8) }

// validString reports whether s is valid UTF-8, as utf8.ValidString. A
// flow's strings (labels, names, addresses) are nearly always short and
// ASCII: it ORs s together 8 bytes at a time, the last 8 overlapping the
// ones before, and calls utf8.ValidString only when a byte has its high
// bit set. That halves the time of utf8.ValidString on such strings,
// which walks the bytes after the last whole 8 one at a time.
func validString(s string) bool {
	b := unsafe.Slice(unsafe.StringData(s), len(s))
	var acc uint64
	if n := len(b); n >= 8 {
		for i := 0; i+8 <= n; i += 8 {
			acc |= binary.LittleEndian.Uint64(b[i:])
		}
		acc |= binary.LittleEndian.Uint64(b[n-8:])
	} else {
		for _, c := range b {
			acc |= uint64(c)
		}
	}
	return acc&0x8080808080808080 == 0 || utf8.ValidString(s)
}

// unknownOffset returns the offset of a generated message struct's unknown
// fields (protoimpl.UnknownFields, a []byte), which proto.Marshal appends
// after the known fields.
func unknownOffset(t reflect.Type) uintptr {
	f, ok := t.FieldByName("unknownFields")
	if !ok || f.Type.Kind() != reflect.Slice || f.Type.Elem().Kind() != reflect.Uint8 {
		panic("encode: " + t.String() + " has no unknownFields []byte field")
	}
	return f.Offset
}

// fixLength writes the length of the nested message that follows the one
// byte reserved at dst[pos], moving the message when its length needs a
// longer varint.
func fixLength(dst []byte, pos int) []byte {
	return fixLengthN(dst, pos, 1)
}

// fixLengthN is fixLength for r reserved bytes.
func fixLengthN(dst []byte, pos, r int) []byte {
	n := len(dst) - pos - r
	if n < 0x80 && r == 1 {
		dst[pos] = byte(n)
		return dst
	}
	k := protowire.SizeVarint(uint64(n))
	switch {
	case k > r:
		dst = slices.Grow(dst, k-r)[:len(dst)+k-r]
		copy(dst[pos+k:], dst[pos+r:pos+r+n])
	case k < r:
		copy(dst[pos+k:], dst[pos+r:pos+r+n])
		dst = dst[:pos+k+n]
	}
	protowire.AppendVarint(dst[:pos], uint64(n))
	return dst
}
