// Package cli is flowbus's command line: run, validate, components,
// check-seq, version and shell completion.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	flowpb "github.com/flowbus/flowbus/flow"
	"github.com/flowbus/flowbus/internal/cputime"
	"github.com/flowbus/flowbus/internal/seqcheck"
	"github.com/flowbus/flowbus/pipeline"
	"github.com/flowbus/flowbus/pipeline/config"
	"github.com/flowbus/flowbus/pipeline/reference"
)

// version is set at build time with
// -ldflags "-X github.com/flowbus/flowbus/pipeline/cli.version=v1.2.3"
// (make release does); otherwise it comes from the module's build
// information.
var version = ""

// Version returns flowbus's version.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return buildVersion(bi.Main.Version, bi.Settings)
}

// buildVersion derives the version from the main module's version and the
// build settings. The go command stamps a module version of its own when it
// builds in a VCS checkout: a tag (v1.2.3), or a pseudo-version that already
// names the commit (v0.0.0-20261203131709-1d085909b787), with "+dirty" for
// a modified tree; that version is used as it is. Only a build without one
// ("(devel)", as with -buildvcs=false or go run in some cases) gets
// "devel", followed by the commit as build metadata when it is known:
// devel+1d085909b787 or devel+1d085909b787.dirty.
func buildVersion(mainVersion string, settings []debug.BuildSetting) string {
	if mainVersion != "" && mainVersion != "(devel)" {
		return mainVersion
	}
	var rev, dirty string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ".dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "devel+" + rev + dirty
}

// exitError carries an exit status; its message has been printed already.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs the command line with args (without the program name) and
// returns the exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewCommand(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(stderr, "flowbus: %v\n", err)
		return 2 // usage errors
	}
}

// NewCommand returns the root command, writing to stdout and stderr.
func NewCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		file           string
		logs           logOptions
		cpuProfile     string
		requireHealthy bool
	)
	root := &cobra.Command{
		Use:   "flowbus",
		Short: "Run a pipeline that turns kernel network events into Hubble flows and publishes them",
		Long: `flowbus runs one YAML-defined pipeline per node: sources (eBPF, Cilium monitor,
Hubble JSON files, synthetic flows) feed transforms (filter, redact, sample,
rate-limit, field mask) that feed sinks (Kafka, NATS, files, discard). Events are
Hubble flows and LostEvents. Without a subcommand, flowbus runs the pipeline.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runProfiled(cmd.Context(), file, logs, cpuProfile, requireHealthy, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVarP(&file, "config", "c", "pipeline.yaml", "pipeline configuration file")
	root.PersistentFlags().StringVar(&logs.level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logs.format, "log-format", "text", "log format: text (key=value) or json (one JSON object a line)")
	// --cpuprofile writes a pprof CPU profile of the whole run (for
	// `go tool pprof`); hidden because it is a developer's tool.
	root.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to FILE")
	_ = root.PersistentFlags().MarkHidden("cpuprofile")
	// --version prints what the version command prints.
	root.Version = Version()
	root.SetVersionTemplate(versionText())
	// `flowbus completion bash|zsh|fish|powershell` is cobra's default
	// completion command.

	runCmd := &cobra.Command{
		Use:   "run",
		Short: "Run the pipeline until SIGINT/SIGTERM or until every finite source is exhausted; SIGHUP reloads the configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runProfiled(cmd.Context(), file, logs, cpuProfile, requireHealthy, stderr)
		},
	}
	// Without --require-healthy a sink whose broker is away at start starts
	// anyway (unready, retrying), so a per-node agent never crash-loops
	// because the bus is away.
	const requireHealthyUsage = "exit 1 when a sink cannot reach its broker at start (default: start unready and keep retrying)"
	root.Flags().BoolVar(&requireHealthy, "require-healthy", false, requireHealthyUsage)
	runCmd.Flags().BoolVar(&requireHealthy, "require-healthy", false, requireHealthyUsage)
	root.AddCommand(runCmd)
	root.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Load, check and build the pipeline without starting it; print each error as FILE:LINE:COL: message",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logs, stderr)
			if err != nil {
				return err
			}
			p, err := pipeline.Load(file, pipeline.Options{Log: log})
			if err != nil {
				printLoadError(stderr, err)
				return exitError{1}
			}
			src, tr, sk := p.Components()
			fmt.Fprintf(stdout, "%s: ok (%d sources, %d transforms, %d sinks)\n", file, len(src), len(tr), len(sk))
			return nil
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, the Go version and the schema version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(stdout, versionText())
			return nil
		},
	})
	root.AddCommand(&cobra.Command{
		Use:   "components [TYPE]",
		Short: "List the component types, or print one type's keys, defaults and example",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs := pipeline.Components()
			if len(args) == 0 {
				return reference.List(stdout, cs)
			}
			found := reference.Find(cs, args[0])
			if len(found) == 0 {
				var types []string
				for _, c := range cs {
					types = append(types, c.Type)
				}
				fmt.Fprintf(stderr, "flowbus: unknown component type %q (known: %s)\n", args[0], strings.Join(types, ", "))
				return exitError{1}
			}
			for i, c := range found {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				if err := reference.Text(stdout, c); err != nil {
					return err
				}
			}
			return nil
		},
	})
	root.AddCommand(checkSeqCmd(stdout))
	return root
}

// checkSeqCmd is `flowbus check-seq`: it reads a Kafka topic or a
// JetStream stream and reports the gaps and duplicates of the flowbus-seq
// numbers, per sink run (NODE/SINK/EPOCH).
func checkSeqCmd(stdout io.Writer) *cobra.Command {
	var (
		brokers, topics       []string
		natsURL, stream, subj string
		timeout               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check-seq",
		Short: "Read a Kafka topic or a JetStream stream and report gaps and duplicates of the flowbus-seq numbers per node, sink and run",
		Long: `check-seq reads every record of the Kafka topics (--brokers, --topic) or of a
JetStream stream (--nats-url, --stream, optionally --subject) as they are when it
starts, and reports for each sequence stream NODE/SINK/EPOCH (one sink of one
flowbus run) how many numbers it saw, the gaps (numbers never seen: events the
sink gave up and reported in a LostEvent) and the duplicates (at-least-once
redeliveries, e.g. after a crash). It exits 1 when there is a gap.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c := seqcheck.New()
			switch {
			case len(brokers) > 0 && len(topics) > 0 && natsURL == "":
				if err := seqcheck.ReadKafka(ctx, c, brokers[0], topics); err != nil {
					return err
				}
			case natsURL != "" && stream != "" && len(brokers) == 0:
				if err := seqcheck.ReadJetStream(ctx, c, natsURL, stream, subj); err != nil {
					return err
				}
			default:
				return errors.New("check-seq: give --brokers and --topic (Kafka), or --nats-url and --stream (JetStream)")
			}
			r := c.Report()
			r.Write(stdout)
			if r.Missing > 0 {
				return exitError{1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "Kafka bootstrap brokers (host:port)")
	f.StringSliceVar(&topics, "topic", nil, "Kafka topic to read (repeat for several)")
	f.StringVar(&natsURL, "nats-url", "", "NATS server URL")
	f.StringVar(&stream, "stream", "", "JetStream stream to read")
	f.StringVar(&subj, "subject", "", "only the stream's messages on this subject (wildcards allowed)")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	return cmd
}

// versionText is what `flowbus version` and `flowbus --version` print.
func versionText() string {
	return fmt.Sprintf("flowbus %s\ngo %s\nschema %s\n", Version(), strings.TrimPrefix(runtime.Version(), "go"), flowpb.SchemaVersion)
}

// logOptions are the --log-level and --log-format flags.
type logOptions struct {
	level, format string
}

func newLogger(o logOptions, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(o.level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", o.level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch o.format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want text or json", o.format)
	}
}

// printLoadError prints config errors one per line as FILE:LINE:COL: msg.
func printLoadError(w io.Writer, err error) {
	var es config.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintf(w, "flowbus: %v\n", err)
}

// runProfiled runs the pipeline, under the CPU profiler when cpuProfile
// names a file.
func runProfiled(ctx context.Context, file string, logs logOptions, cpuProfile string, requireHealthy bool, stderr io.Writer) error {
	return cputime.Profiled("--cpuprofile", cpuProfile, func() error {
		return runPipeline(ctx, file, logs, requireHealthy, stderr)
	})
}

func runPipeline(ctx context.Context, file string, logs logOptions, requireHealthy bool, stderr io.Writer) error {
	log, err := newLogger(logs, stderr)
	if err != nil {
		return err
	}
	// The process-wide metrics; each generation of the pipeline adds its own
	// registry, and the Reloader serves both.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "flowbus_build_info",
			Help:        "flowbus's version, Go version and schema version; always 1.",
			ConstLabels: prometheus.Labels{"version": Version(), "go_version": runtime.Version(), "schema": flowpb.SchemaVersion},
		}, func() float64 { return 1 }),
	)
	r := &pipeline.Reloader{
		Load: func(o pipeline.Options) (*pipeline.Pipeline, error) {
			o.RequireHealthy = requireHealthy
			return pipeline.Load(file, o)
		},
		Log:      log,
		Registry: reg,
	}
	p, err := r.Build()
	if err != nil {
		printLoadError(stderr, err)
		return exitError{1}
	}

	ctx, reload, stop := handleSignals(ctx)
	defer stop()
	summary, err := r.Run(ctx, p, reload)
	if summary != nil {
		for _, line := range summary.Lines() {
			fmt.Fprintln(stderr, line)
		}
	}
	if err != nil {
		log.Error("pipeline failed", "error", err)
		return exitError{1}
	}
	return nil
}

// handleSignals routes the signals `run` handles. SIGINT and SIGTERM
// cancel the returned context, which drains the pipeline; a second one gets
// the default behaviour and ends the process. SIGHUP sends a reload request
// on the returned channel (requests that arrive while one is pending are
// merged into it; once the pipeline is stopping, SIGHUP is ignored). stop
// releases SIGINT, SIGTERM and SIGHUP.
func handleSignals(ctx context.Context) (_ context.Context, reload <-chan struct{}, stop func()) {
	survivePipeReaderExit()
	ctx, stopNotify := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	req := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				stopNotify()
				return
			case <-hup:
				select {
				case req <- struct{}{}:
				default:
				}
			}
		}
	}()
	return ctx, req, func() {
		stopNotify()
		signal.Stop(hup)
	}
}

// survivePipeReaderExit keeps flowbus running when the reader of its stdout
// goes away (`flowbus run | head -1`): by default Go ends the process with
// SIGPIPE at the next write to a closed stdout. With SIGPIPE notified, the
// write fails with EPIPE instead, the file sink writing to stdout fails
// alone (its events counted as lost), and the rest of the pipeline runs on.
func survivePipeReaderExit() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

// Run is main's entry point: it runs the command line with the process's
// arguments and exits with its status.
func Run() {
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
