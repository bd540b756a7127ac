package flowfilter

import (
	"context"
	"reflect"
	"testing"

	flowpb "github.com/flowbus/flowbus/flow"
)

// HubbleStyleCELForTest compiles expr as Hubble's CEL filter does (no
// program options) and returns an evaluator that, like Hubble's, builds a
// map activation per flow and converts the result to a Go bool.
func HubbleStyleCELForTest(tb testing.TB, expr string) func(*flowpb.Flow) bool {
	env, err := environment()
	if err != nil {
		tb.Fatal(err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		tb.Fatal(iss.Err())
	}
	prg, err := env.Program(ast)
	if err != nil {
		tb.Fatal(err)
	}
	boolType := reflect.TypeFor[bool]()
	return func(f *flowpb.Flow) bool {
		out, _, err := prg.ContextEval(context.Background(), map[string]any{celVariable: f})
		if err != nil {
			return false
		}
		v, err := out.ConvertToNative(boolType)
		if err != nil {
			return false
		}
		b, ok := v.(bool)
		return ok && b
	}
}
