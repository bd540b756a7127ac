// Package config reads flowbus's YAML configuration strictly: every error
// carries the file, line and column it is about.
package config

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a configuration error at a position in a file.
type Error struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *Error) Error() string {
	file := e.File
	if file == "" {
		file = "<config>"
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, e.Line, e.Col, e.Msg)
}

// Errorf returns an error at the position of n.
func Errorf(n *yaml.Node, format string, args ...any) *Error {
	e := &Error{Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	return e
}

// Errors is a list of configuration errors, printed one per line.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Positioned returns err as a list of positioned errors: the *Error values
// it wraps, or one error at n's position carrying its text.
func Positioned(err error, n *yaml.Node) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	var e *Error
	if errors.As(err, &e) {
		return Errors{e}
	}
	return Errors{Errorf(n, "%v", err)}
}

// Decode decodes the mapping n into v, a pointer to a struct with yaml
// tags. It is strict: an unknown key or a value of the wrong type is an
// error at its position. All errors found are returned together as Errors.
func Decode(n *yaml.Node, v any) error {
	// TODO(runtime): strict reflective decoding with positions.
	if n == nil {
		return nil
	}
	if err := n.Decode(v); err != nil {
		return Errors{Errorf(n, "%v", err)}
	}
	return nil
}
