package flowfilter

import (
	stdcmp "cmp"
	"errors"
	"math"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/overloads"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	flowpb "github.com/flowbus/flowbus/flow"
)

// This file compiles type-checked CEL expressions over _flow into Go
// closures that evaluate without allocating. Fields are read with the
// schema's generated getters (celaccess_gen.go), not through protoreflect.
// It covers the expressions flow filters are made of: field selections and
// presence tests on messages, comparisons of bools, integers, unsigned
// integers, strings and enums, the logical operators, `in` over list
// literals and repeated string fields, size, startsWith, endsWith,
// contains, matches with a constant pattern, int()/uint() of literals, and
// exists/all over repeated string fields. None of these can fail at run
// time (no arithmetic, no indexing), so CEL's error semantics never come
// into play and the results equal cel-go's; a differential test checks
// this. Any other expression is evaluated by cel-go itself.

// errUnsupported makes the compiler fall back to cel-go.
var errUnsupported = errors.New("not supported by the fast evaluator")

type fastKind int

const (
	fkBool fastKind = iota
	fkInt
	fkUint
	fkString
	fkMsg
	fkStrList
)

// celCtx is the evaluation state: the flow and the comprehension
// variables.
type celCtx struct {
	flow  *flowpb.Flow
	strs  [4]string
	bools [4]bool
	// cost counts the list elements visited (plus one per 64 bytes of
	// each); past CELMaxRuntimeCost every loop stops and the result is
	// discarded (no match).
	cost uint64
}

// charge adds the cost of visiting list element s and reports whether the
// evaluation is still within CELMaxRuntimeCost.
func (x *celCtx) charge(s string) bool {
	x.cost += 1 + uint64(len(s))>>6
	return x.cost <= CELMaxRuntimeCost
}

// fastExpr is a compiled sub-expression; the field matching kind is set.
type fastExpr struct {
	kind fastKind
	b    func(*celCtx) bool
	i    func(*celCtx) int64
	u    func(*celCtx) uint64
	s    func(*celCtx) string
	m    func(*celCtx) proto.Message
	l    func(*celCtx) []string
	// lit is the value of a constant (a literal or an enum constant).
	lit ref.Val
	// md is the descriptor of a message-kind expression.
	md protoreflect.MessageDescriptor
}

type fastCompiler struct {
	ast *celast.AST
	// scopes maps comprehension variable names to their slot and kind.
	scopes []fastVar
	nStr   int
	nBool  int
}

type fastVar struct {
	name string
	kind fastKind
	slot int
}

// compileFast returns the fast evaluator of a checked boolean expression,
// or errUnsupported.
func compileFast(a *celast.AST) (func(*celCtx) bool, error) {
	c := &fastCompiler{ast: a}
	e, err := c.expr(a.Expr())
	if err != nil {
		return nil, err
	}
	if e.kind != fkBool {
		return nil, errUnsupported
	}
	return e.b, nil
}

func (c *fastCompiler) expr(e celast.Expr) (*fastExpr, error) {
	switch e.Kind() {
	case celast.LiteralKind:
		return literal(e.AsLiteral())
	case celast.IdentKind:
		return c.ident(e)
	case celast.SelectKind:
		return c.selectExpr(e)
	case celast.CallKind:
		return c.call(e)
	case celast.ComprehensionKind:
		return c.comprehension(e)
	}
	return nil, errUnsupported
}

func literal(v ref.Val) (*fastExpr, error) {
	switch x := v.(type) {
	case types.Bool:
		b := bool(x)
		return &fastExpr{kind: fkBool, lit: v, b: func(*celCtx) bool { return b }}, nil
	case types.Int:
		i := int64(x)
		return &fastExpr{kind: fkInt, lit: v, i: func(*celCtx) int64 { return i }}, nil
	case types.Uint:
		u := uint64(x)
		return &fastExpr{kind: fkUint, lit: v, u: func(*celCtx) uint64 { return u }}, nil
	case types.String:
		s := string(x)
		return &fastExpr{kind: fkString, lit: v, s: func(*celCtx) string { return s }}, nil
	}
	return nil, errUnsupported
}

func (c *fastCompiler) ident(e celast.Expr) (*fastExpr, error) {
	name := e.AsIdent()
	for i := len(c.scopes) - 1; i >= 0; i-- {
		v := c.scopes[i]
		if v.name != name {
			continue
		}
		slot := v.slot
		switch v.kind {
		case fkString:
			return &fastExpr{kind: fkString, s: func(x *celCtx) string { return x.strs[slot] }}, nil
		case fkBool:
			return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return x.bools[slot] }}, nil
		}
		return nil, errUnsupported
	}
	if ref, ok := c.ast.ReferenceMap()[e.ID()]; ok && ref.Value != nil {
		return literal(ref.Value) // an enum constant
	}
	if name == celVariable {
		md := (*flowpb.Flow)(nil).ProtoReflect().Descriptor()
		return &fastExpr{kind: fkMsg, md: md, m: func(x *celCtx) proto.Message { return x.flow }}, nil
	}
	return nil, errUnsupported
}

func (c *fastCompiler) selectExpr(e celast.Expr) (*fastExpr, error) {
	sel := e.AsSelect()
	op, err := c.expr(sel.Operand())
	if err != nil {
		return nil, err
	}
	if op.kind != fkMsg {
		return nil, errUnsupported
	}
	fd := op.md.Fields().ByName(protoreflect.Name(sel.FieldName()))
	if fd == nil {
		return nil, errUnsupported
	}
	parent, key := op.m, string(fd.FullName())
	if sel.IsTestOnly() {
		// has(): proto presence, as cel-go's IsSet.
		if g := celHasGetters[key]; g != nil {
			return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return g(parent(x)) }}, nil
		}
		return nil, errUnsupported
	}
	if g := celMsgGetters[key]; g != nil {
		return &fastExpr{kind: fkMsg, md: fd.Message(), m: func(x *celCtx) proto.Message { return g(parent(x)) }}, nil
	}
	if g := celStrListGetters[key]; g != nil {
		return &fastExpr{kind: fkStrList, l: func(x *celCtx) []string { return g(parent(x)) }}, nil
	}
	if g := celBoolGetters[key]; g != nil {
		return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return g(parent(x)) }}, nil
	}
	if g := celIntGetters[key]; g != nil {
		return &fastExpr{kind: fkInt, i: func(x *celCtx) int64 { return g(parent(x)) }}, nil
	}
	if g := celUintGetters[key]; g != nil {
		return &fastExpr{kind: fkUint, u: func(x *celCtx) uint64 { return g(parent(x)) }}, nil
	}
	if g := celStringGetters[key]; g != nil {
		return &fastExpr{kind: fkString, s: func(x *celCtx) string { return g(parent(x)) }}, nil
	}
	return nil, errUnsupported
}

func (c *fastCompiler) args(call celast.CallExpr) ([]*fastExpr, error) {
	var out []*fastExpr
	if call.IsMemberFunction() {
		t, err := c.expr(call.Target())
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	for _, a := range call.Args() {
		x, err := c.expr(a)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

func (c *fastCompiler) call(e celast.Expr) (*fastExpr, error) {
	call := e.AsCall()
	fn := call.FunctionName()
	if fn == operators.In {
		return c.in(call)
	}
	args, err := c.args(call)
	if err != nil {
		return nil, err
	}
	boolOut := func(f func(*celCtx) bool) (*fastExpr, error) { return &fastExpr{kind: fkBool, b: f}, nil }
	switch fn {
	case operators.LogicalAnd, operators.LogicalOr:
		if len(args) != 2 || args[0].kind != fkBool || args[1].kind != fkBool {
			return nil, errUnsupported
		}
		l, r := args[0].b, args[1].b
		if fn == operators.LogicalAnd {
			return boolOut(func(x *celCtx) bool { return l(x) && r(x) })
		}
		return boolOut(func(x *celCtx) bool { return l(x) || r(x) })
	case operators.LogicalNot, operators.NotStrictlyFalse:
		if len(args) != 1 || args[0].kind != fkBool {
			return nil, errUnsupported
		}
		a := args[0].b
		if fn == operators.LogicalNot {
			return boolOut(func(x *celCtx) bool { return !a(x) })
		}
		return args[0], nil
	case operators.Equals, operators.NotEquals, operators.Less, operators.LessEquals, operators.Greater, operators.GreaterEquals:
		if len(args) != 2 || args[0].kind != args[1].kind {
			return nil, errUnsupported
		}
		return compare(fn, args[0], args[1])
	case overloads.Size:
		if len(args) != 1 {
			return nil, errUnsupported
		}
		switch a := args[0]; a.kind {
		case fkString:
			s := a.s
			return &fastExpr{kind: fkInt, i: func(x *celCtx) int64 { return int64(utf8.RuneCountInString(s(x))) }}, nil
		case fkStrList:
			l := a.l
			return &fastExpr{kind: fkInt, i: func(x *celCtx) int64 { return int64(len(l(x))) }}, nil
		}
		return nil, errUnsupported
	case overloads.StartsWith, overloads.EndsWith, overloads.Contains:
		if !call.IsMemberFunction() || len(args) != 2 || args[0].kind != fkString || args[1].kind != fkString {
			return nil, errUnsupported
		}
		s, arg := args[0].s, args[1].s
		switch fn {
		case overloads.StartsWith:
			return boolOut(func(x *celCtx) bool { return strings.HasPrefix(s(x), arg(x)) })
		case overloads.EndsWith:
			return boolOut(func(x *celCtx) bool { return strings.HasSuffix(s(x), arg(x)) })
		}
		return boolOut(func(x *celCtx) bool { return strings.Contains(s(x), arg(x)) })
	case overloads.TypeConvertUint, overloads.TypeConvertInt:
		// uint(443) and int(1u) of a literal, as filters write ports.
		if len(args) != 1 || args[0].lit == nil {
			return nil, errUnsupported
		}
		switch v := args[0].lit.(type) {
		case types.Int:
			if fn == overloads.TypeConvertUint && v >= 0 {
				return literal(types.Uint(v))
			}
			if fn == overloads.TypeConvertInt {
				return args[0], nil
			}
		case types.Uint:
			if fn == overloads.TypeConvertInt && v <= math.MaxInt64 {
				return literal(types.Int(v))
			}
			if fn == overloads.TypeConvertUint {
				return args[0], nil
			}
		}
		return nil, errUnsupported
	case overloads.Matches:
		if len(args) != 2 || args[0].kind != fkString || args[1].kind != fkString || args[1].lit == nil {
			return nil, errUnsupported
		}
		re, err := regexp.Compile(string(args[1].lit.(types.String)))
		if err != nil {
			return nil, errUnsupported // cel-go reports it
		}
		s := args[0].s
		return boolOut(func(x *celCtx) bool { return re.MatchString(s(x)) })
	}
	return nil, errUnsupported
}

func compare(fn string, l, r *fastExpr) (*fastExpr, error) {
	var cmp func(*celCtx) int
	switch l.kind {
	case fkBool:
		lf, rf := l.b, r.b
		if fn == operators.Equals || fn == operators.NotEquals {
			eq := func(x *celCtx) bool { return lf(x) == rf(x) }
			if fn == operators.NotEquals {
				return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return !eq(x) }}, nil
			}
			return &fastExpr{kind: fkBool, b: eq}, nil
		}
		cmp = func(x *celCtx) int { return b2i(lf(x)) - b2i(rf(x)) }
	case fkInt:
		lf, rf := l.i, r.i
		if r.lit != nil {
			k := int64(r.lit.(types.Int))
			switch fn {
			case operators.Equals:
				return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return lf(x) == k }}, nil
			case operators.NotEquals:
				return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return lf(x) != k }}, nil
			}
		}
		cmp = func(x *celCtx) int { return stdcmp.Compare(lf(x), rf(x)) }
	case fkUint:
		lf, rf := l.u, r.u
		if r.lit != nil {
			k := uint64(r.lit.(types.Uint))
			switch fn {
			case operators.Equals:
				return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return lf(x) == k }}, nil
			case operators.NotEquals:
				return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return lf(x) != k }}, nil
			}
		}
		cmp = func(x *celCtx) int { return stdcmp.Compare(lf(x), rf(x)) }
	case fkString:
		lf, rf := l.s, r.s
		cmp = func(x *celCtx) int { return strings.Compare(lf(x), rf(x)) }
	default:
		return nil, errUnsupported
	}
	var b func(*celCtx) bool
	switch fn {
	case operators.Equals:
		b = func(x *celCtx) bool { return cmp(x) == 0 }
	case operators.NotEquals:
		b = func(x *celCtx) bool { return cmp(x) != 0 }
	case operators.Less:
		b = func(x *celCtx) bool { return cmp(x) < 0 }
	case operators.LessEquals:
		b = func(x *celCtx) bool { return cmp(x) <= 0 }
	case operators.Greater:
		b = func(x *celCtx) bool { return cmp(x) > 0 }
	case operators.GreaterEquals:
		b = func(x *celCtx) bool { return cmp(x) >= 0 }
	}
	return &fastExpr{kind: fkBool, b: b}, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// in compiles `x in [constants]` and `s in repeated_string_field`.
func (c *fastCompiler) in(call celast.CallExpr) (*fastExpr, error) {
	args := call.Args()
	if len(args) != 2 {
		return nil, errUnsupported
	}
	lhs, err := c.expr(args[0])
	if err != nil {
		return nil, err
	}
	if args[1].Kind() == celast.ListKind {
		list := args[1].AsList()
		if len(list.OptionalIndices()) > 0 {
			return nil, errUnsupported
		}
		var elems []*fastExpr
		for _, el := range list.Elements() {
			x, err := c.expr(el)
			if err != nil {
				return nil, err
			}
			if x.lit == nil || x.kind != lhs.kind {
				return nil, errUnsupported
			}
			elems = append(elems, x)
		}
		switch lhs.kind {
		case fkInt:
			return inSet(lhs.i, elems, func(v ref.Val) int64 { return int64(v.(types.Int)) }), nil
		case fkUint:
			return inSet(lhs.u, elems, func(v ref.Val) uint64 { return uint64(v.(types.Uint)) }), nil
		case fkString:
			return inSet(lhs.s, elems, func(v ref.Val) string { return string(v.(types.String)) }), nil
		case fkBool:
			var hasT, hasF bool
			for _, x := range elems {
				if bool(x.lit.(types.Bool)) {
					hasT = true
				} else {
					hasF = true
				}
			}
			f := lhs.b
			return &fastExpr{kind: fkBool, b: func(x *celCtx) bool {
				if f(x) {
					return hasT
				}
				return hasF
			}}, nil
		}
		return nil, errUnsupported
	}
	rhs, err := c.expr(args[1])
	if err != nil {
		return nil, err
	}
	if rhs.kind != fkStrList || lhs.kind != fkString {
		return nil, errUnsupported
	}
	f, l := lhs.s, rhs.l
	return &fastExpr{kind: fkBool, b: func(x *celCtx) bool {
		v := f(x)
		for _, s := range l(x) {
			if !x.charge(s) {
				return false
			}
			if s == v {
				return true
			}
		}
		return false
	}}, nil
}

// inSet compiles `x in [constants]` for a comparable kind: the constants
// are converted once, and each evaluation scans them.
func inSet[T comparable](f func(*celCtx) T, elems []*fastExpr, conv func(ref.Val) T) *fastExpr {
	set := make([]T, len(elems))
	for i, x := range elems {
		set[i] = conv(x.lit)
	}
	return &fastExpr{kind: fkBool, b: func(x *celCtx) bool { return slices.Contains(set, f(x)) }}
}

// comprehension compiles the macros over a repeated string field whose
// accumulator is a bool (exists, all): accu = init; for each element while
// the loop condition holds, accu = step; then the result.
func (c *fastCompiler) comprehension(e celast.Expr) (*fastExpr, error) {
	comp := e.AsComprehension()
	if comp.HasIterVar2() {
		return nil, errUnsupported
	}
	rng, err := c.expr(comp.IterRange())
	if err != nil {
		return nil, err
	}
	if rng.kind != fkStrList {
		return nil, errUnsupported
	}
	init, err := c.expr(comp.AccuInit())
	if err != nil {
		return nil, err
	}
	if init.kind != fkBool || c.nStr >= len(celCtx{}.strs) || c.nBool >= len(celCtx{}.bools) {
		return nil, errUnsupported
	}
	iterSlot, accuSlot := c.nStr, c.nBool
	c.nStr++
	c.nBool++
	c.scopes = append(c.scopes, fastVar{comp.AccuVar(), fkBool, accuSlot}, fastVar{comp.IterVar(), fkString, iterSlot})
	defer func() { c.scopes = c.scopes[:len(c.scopes)-2] }()

	// The accumulator alone is visible in the result.
	cond, err := c.expr(comp.LoopCondition())
	if err != nil {
		return nil, err
	}
	step, err := c.expr(comp.LoopStep())
	if err != nil {
		return nil, err
	}
	c.scopes = c.scopes[:len(c.scopes)-1] // hide the iteration variable
	result, err := c.expr(comp.Result())
	c.scopes = append(c.scopes, fastVar{comp.IterVar(), fkString, iterSlot})
	if err != nil {
		return nil, err
	}
	if cond.kind != fkBool || step.kind != fkBool || result.kind != fkBool {
		return nil, errUnsupported
	}
	rf, initf, condf, stepf, resf := rng.l, init.b, cond.b, step.b, result.b
	return &fastExpr{kind: fkBool, b: func(x *celCtx) bool {
		saveS, saveB := x.strs[iterSlot], x.bools[accuSlot]
		x.bools[accuSlot] = initf(x)
		for _, s := range rf(x) {
			x.strs[iterSlot] = s
			if !x.charge(s) || !condf(x) {
				break
			}
			x.bools[accuSlot] = stepf(x)
		}
		r := resf(x)
		x.strs[iterSlot], x.bools[accuSlot] = saveS, saveB
		return r
	}}, nil
}
