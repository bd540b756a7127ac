package flowfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
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
	// expressions are rejected at load time. The estimate assumes strings
	// of at most celMaxStringSize bytes and lists of at most celMaxListSize
	// entries. A unit is about one basic operation: field tests cost under
	// 20, a regular expression over every label about 30,000, a comparison
	// of every source label with every destination label about 7,000,000;
	// nesting one more list is rejected.
	CELMaxCost = 10_000_000
	// CELMaxRuntimeCost bounds the actual cost of evaluating one
	// expression on one flow with the fast evaluator (celfast.go), which
	// counts one unit per list element it visits plus one per 64 bytes of
	// each element: about 50 ms at most. A flow within the estimate's size
	// assumptions never reaches it; a flow with, say, 20,000 labels can,
	// and then the expression does not match that flow (in a deny list:
	// does not deny it), the flow is counted in CELCostExceeded, and the
	// first such flow of each expression is logged.
	CELMaxRuntimeCost = CELMaxCost
	// CELMaxEvalTime bounds the evaluation of one expression on one flow
	// by cel-go, for the expressions outside the fast subset whose cost
	// grows with the flow (lists, strings); past it the flow does not
	// match, as above. cel-go's own run-time cost tracking cannot be used:
	// it keeps every intermediate value of a comprehension on a stack that
	// it searches linearly, so tracking a loop over n labels costs n², and
	// a 20,000-label flow would take longer with the limit than without.
	// Expressions whose cost does not grow with the flow run with no limit.
	CELMaxEvalTime = 100 * time.Millisecond
	// celInterruptEvery is how many comprehension iterations cel-go runs
	// between checks of the deadline.
	celInterruptEvery = 64
	// celMaxStringSize and celMaxListSize are the size assumptions of the
	// estimate.
	celMaxStringSize = 1024
	celMaxListSize   = 256
)

var (
	celCostExceeded atomic.Uint64

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

// CELCostExceeded returns how many evaluations of CEL expressions on flows
// were stopped at CELMaxRuntimeCost or CELMaxEvalTime (and so did not
// match), process-wide.
func CELCostExceeded() uint64 { return celCostExceeded.Load() }

// celProgram is one compiled expression: the allocation-free closure when
// the expression is in the fast subset (celfast.go), else the cel-go
// program with its reusable activation.
type celProgram struct {
	expr string
	fast func(*celCtx) bool
	ctx  celCtx
	prg  cel.Program
	act  flowActivation
	// bounded is set when prg runs under CELMaxEvalTime.
	bounded bool
	// logged is set once a flow exceeded the cost limit and was logged.
	logged atomic.Bool
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
	est, err := env.EstimateCost(ast, costEstimator{str: celMaxStringSize, list: celMaxListSize})
	if err != nil {
		return nil, fmt.Errorf("CEL cost estimate: %w", err)
	}
	if est.Max > CELMaxCost {
		return nil, fmt.Errorf("CEL expression too costly: worst-case cost %d exceeds %d", est.Max, CELMaxCost)
	}
	// Bound the evaluation time only when the cost can grow with the flow:
	// the estimate with unbounded sizes is then above the limit.
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	unbounded, err := env.EstimateCost(ast, costEstimator{str: math.MaxUint32, list: math.MaxUint32})
	bounded := err != nil || unbounded.Max > CELMaxCost
	if bounded {
		opts = append(opts, cel.InterruptCheckFrequency(celInterruptEvery))
	}
	prg, err := env.Program(ast, opts...)
	if err != nil {
		return nil, fmt.Errorf("CEL program: %w", err)
	}
	p := &celProgram{expr: expr, prg: prg, bounded: bounded}
	if fast, err := compileFast(ast.NativeRep()); err == nil {
		p.fast = fast
	}
	return p, nil
}

func (p *celProgram) eval(f *flowpb.Flow) bool {
	if p.fast != nil {
		p.ctx.flow, p.ctx.cost = f, 0
		r := p.fast(&p.ctx)
		p.ctx.flow = nil
		if p.ctx.cost > CELMaxRuntimeCost {
			p.exceeded()
			return false
		}
		return r
	}
	p.act.flow = f
	var out ref.Val
	var err error
	if p.bounded {
		ctx, cancel := context.WithTimeout(context.Background(), CELMaxEvalTime)
		out, _, err = p.prg.ContextEval(ctx, &p.act)
		cancel()
		if err != nil && errors.Is(err, interpreter.InterruptError{}) {
			p.exceeded()
		}
	} else {
		out, _, err = p.prg.Eval(&p.act)
	}
	p.act.flow = nil
	return err == nil && out == types.True
}

// exceeded counts a flow on which the expression passed CELMaxRuntimeCost
// or CELMaxEvalTime, and logs the first.
func (p *celProgram) exceeded() {
	celCostExceeded.Add(1)
	if !p.logged.Swap(true) {
		slog.Warn("CEL expression exceeded its run-time cost limit on a flow; such flows do not match it (counted, logged once per expression)",
			"expression", p.expr, "cost_limit", CELMaxRuntimeCost, "time_limit", CELMaxEvalTime)
	}
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

// costEstimator bounds the sizes the static estimate assumes: str for
// strings and bytes, list for lists and maps.
type costEstimator struct{ str, list uint64 }

func (c costEstimator) EstimateSize(element checker.AstNode) *checker.SizeEstimate {
	if element.ComputedSize() != nil {
		return nil
	}
	switch element.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Min: 0, Max: c.str}
	case types.ListKind, types.MapKind:
		return &checker.SizeEstimate{Min: 0, Max: c.list}
	}
	return nil
}

func (costEstimator) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}
