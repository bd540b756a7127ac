package flowfilter

import (
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"

	flowpb "github.com/flowbus/flowbus/flow"
)

// CEL limits.
const (
	// celVariable is the flow's name in expressions (Hubble's: "flow" would
	// clash with the proto package).
	celVariable = "_flow"
	// CELMaxExpressionSize is the longest expression accepted, in code
	// points (Hubble's limit).
	CELMaxExpressionSize = 4096
	// CELMaxCost is the largest worst-case cost, as estimated by cel-go's
	// static cost estimator, that an expression may have; more costly
	// expressions are rejected at load time, so that evaluation needs no
	// run-time cost tracking (which triples the evaluation time). The
	// estimate assumes strings of at most celMaxStringSize bytes and lists
	// of at most celMaxListSize entries. A unit is about one basic
	// operation: field tests cost under 20, a regular expression over every
	// label about 30,000, a comparison of every source label with every
	// destination label about 7,000,000; nesting one more list is rejected.
	CELMaxCost = 10_000_000
	// celMaxStringSize and celMaxListSize are the size assumptions of the
	// estimate.
	celMaxStringSize = 1024
	celMaxListSize   = 256
)

var (
	celEnvOnce sync.Once
	celEnv     *cel.Env
	celEnvErr  error
)

// environment returns the CEL environment Hubble uses: container "flow",
// the flow types, and one variable _flow of type flow.Flow.
func environment() (*cel.Env, error) {
	celEnvOnce.Do(func() {
		celEnv, celEnvErr = cel.NewEnv(
			cel.Container("flow"),
			cel.Types(&flowpb.Flow{}),
			cel.Variable(celVariable, cel.ObjectType("flow.Flow")),
			cel.ParserExpressionSizeLimit(CELMaxExpressionSize),
		)
	})
	return celEnv, celEnvErr
}

// celFilter: experimental.cel_expression. Each expression must type-check
// to bool; the expressions are ORed, and an evaluation error or a non-true
// result is no match.
func celFilter(exprs []string) (predicate, error) {
	if len(exprs) == 0 {
		return nil, nil
	}
	progs := make([]*celProgram, 0, len(exprs))
	for i, e := range exprs {
		p, err := compileCEL(e)
		if err != nil {
			return nil, fieldErr("experimental.cel_expression", i, e, err)
		}
		progs = append(progs, p)
	}
	return func(f *flowpb.Flow) bool {
		for _, p := range progs {
			if p.eval(f) {
				return true
			}
		}
		return false
	}, nil
}

// celProgram is one compiled expression: the allocation-free closure when
// the expression is in the fast subset (celfast.go), else the cel-go
// program with its reusable activation.
type celProgram struct {
	fast func(*celCtx) bool
	ctx  celCtx
	prg  cel.Program
	act  flowActivation
}

func compileCEL(expr string) (*celProgram, error) {
	env, err := environment()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("invalid CEL expression: %w", iss.Err())
	}
	// Hubble compares the output type with cel.BoolType itself, so dyn and
	// anything not typed exactly bool is rejected.
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("CEL expression must be bool, got %s", ast.OutputType())
	}
	est, err := env.EstimateCost(ast, costEstimator{})
	if err != nil {
		return nil, fmt.Errorf("CEL cost estimate: %w", err)
	}
	if est.Max > CELMaxCost {
		return nil, fmt.Errorf("CEL expression too costly: worst-case cost %d exceeds %d", est.Max, CELMaxCost)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("CEL program: %w", err)
	}
	p := &celProgram{prg: prg}
	if fast, err := compileFast(ast.NativeRep()); err == nil {
		p.fast = fast
	}
	return p, nil
}

func (p *celProgram) eval(f *flowpb.Flow) bool {
	if p.fast != nil {
		p.ctx.flow = f
		r := p.fast(&p.ctx)
		p.ctx.flow = nil
		return r
	}
	p.act.flow = f
	out, _, err := p.prg.Eval(&p.act)
	p.act.flow = nil
	if err != nil {
		return false
	}
	return out == types.True
}

// flowActivation is an interpreter.Activation binding _flow to one flow,
// reused for every evaluation (no map per flow).
type flowActivation struct {
	flow *flowpb.Flow
}

func (a *flowActivation) ResolveName(name string) (any, bool) {
	if name == celVariable {
		return a.flow, true
	}
	return nil, false
}

func (a *flowActivation) Parent() interpreter.Activation { return nil }

// costEstimator bounds the sizes the static estimate assumes.
type costEstimator struct{}

func (costEstimator) EstimateSize(element checker.AstNode) *checker.SizeEstimate {
	if element.ComputedSize() != nil {
		return nil
	}
	switch element.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Min: 0, Max: celMaxStringSize}
	case types.ListKind, types.MapKind:
		return &checker.SizeEstimate{Min: 0, Max: celMaxListSize}
	}
	return nil
}

func (costEstimator) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}
