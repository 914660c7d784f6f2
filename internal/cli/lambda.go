package cli

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hearth-run/hearth/internal/api"
	"github.com/hearth-run/hearth/internal/image"
	"github.com/hearth-run/hearth/internal/lambda"
	"github.com/hearth-run/hearth/internal/worker"
)

// LambdaConfig is the lambda section of hearth.yaml: the AWS Lambda
// compatible API the worker serves next to /v1.
type LambdaConfig struct {
	// Credentials is a file in the AWS shared credentials format, one
	// [name] section per access key (mode 0600). Without it the Lambda
	// API refuses every request, unless Insecure.
	Credentials string `yaml:"credentials"`
	// Insecure accepts unsigned requests when no credentials are set
	// (--lambda-api-insecure): for a worker on loopback only.
	Insecure bool `yaml:"insecure"`
	// Region is used in ARNs of unsigned requests (default us-east-1).
	Region string `yaml:"region"`
	// AccountID is the account in ARNs (default 000000000000).
	AccountID string `yaml:"account_id"`
	// Async configures Event invocations.
	Async lambda.AsyncConfig `yaml:"async"`
}

// addLambdaFlags declares the lambda flags of `hearth up`, bound to c.
func addLambdaFlags(f *pflag.FlagSet, c *LambdaConfig) {
	f.StringVar(&c.Credentials, "lambda-credentials", c.Credentials, "access keys of the Lambda API: a file in the AWS credentials format, one [name] per key")
	f.BoolVar(&c.Insecure, "lambda-api-insecure", c.Insecure, "serve the Lambda API without checking signatures when no keys are configured")
	f.DurationVar(&c.Async.RetryBackoff, "lambda-retry-backoff", c.Async.RetryBackoff, "wait before the first retry of a failed Event invocation; the second waits twice as long (default 1m)")
}

// lambdaConfig turns hearth.yaml's lambda section into the API's.
func lambdaConfig(c LambdaConfig, dataDir, base string, log *slog.Logger) (lambda.Config, error) {
	out := lambda.Config{DataDir: dataDir, Insecure: c.Insecure, Region: c.Region, AccountID: c.AccountID, Logger: log}
	if c.Credentials != "" {
		keys, err := lambda.LoadKeys(c.Credentials)
		if err != nil {
			return out, err
		}
		if len(keys) == 0 {
			return out, fmt.Errorf("lambda credentials %s: no keys", c.Credentials)
		}
		out.Keys = keys
	}
	switch {
	case len(out.Keys) > 0:
		log.Info("Lambda API on", "keys", len(out.Keys))
	case c.Insecure:
		log.Warn("Lambda API on WITHOUT signature checks (--lambda-api-insecure): anyone who reaches the port can deploy and run code")
	default:
		log.Info("Lambda API off: no access keys (lambda.credentials); its requests get 403")
	}
	if v, err := image.PythonVersion(base); err == nil {
		out.Runtime = "python" + v
	}
	if err := lambdaAsync(c.Async); err != nil {
		return out, err
	}
	out.Async = c.Async
	return out, nil
}

func newAsyncCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "async",
		Short: "Records of the Event invocations the Lambda API accepted",
	}
	var cf clientFlags
	var fn, state string
	var n int
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List Event invocations, newest first, with their state and attempts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := cf.client().AsyncInvocations(cmd.Context(), fn, state, n)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(l)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REQUEST ID\tFUNCTION\tSTATE\tATTEMPTS\tACCEPTED\tERROR")
			for _, r := range l.Invocations {
				msg := r.ErrorType
				if r.Error != "" {
					msg += ": " + r.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.RequestID, r.Function, r.State, r.Attempts,
					r.Accepted.Local().Format(time.DateTime), msg)
			}
			fmt.Fprintf(tw, "(%d not finished, of at most %d; %d records kept)\n", l.Pending, l.MaxQueued, l.Records)
			return tw.Flush()
		},
	}
	cf.add(ls)
	ls.Flags().StringVar(&fn, "function", "", "only this function's")
	ls.Flags().StringVar(&state, "state", "", "only those in this state: queued, running, retrying, succeeded or failed")
	ls.Flags().IntVarP(&n, "n", "n", 100, "at most this many (0: all)")
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var gcf clientFlags
	get := &cobra.Command{
		Use:   "get REQUEST-ID",
		Short: "Show the record of one Event invocation",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := gcf.client().AsyncInvocation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		},
	}
	gcf.add(get)
	cmd.AddCommand(ls, get)
	return cmd
}

// mountLambda opens the Lambda API and mounts it on handler: its
// operations under /2015-03-31/, its records of Event invocations under
// /v1/async-invocations (behind the token). Its Event invocations run
// for the worker's lifetime; the caller closes it after shutdown.
func mountLambda(cfg Config, base string, reg lambda.Registry, wk *worker.Worker, handler *api.Server, log *slog.Logger) (*lambda.Server, error) {
	lcfg, err := lambdaConfig(cfg.Lambda, cfg.DataDir, base, log)
	if err != nil {
		return nil, err
	}
	lcfg.MaxBody = cfg.MaxBodyMB << 20
	lcfg.MaxArchive = cfg.MaxArchiveMB << 20
	lcfg.HostPaths = hostPaths(cfg.DataDir, base, "")
	lam, err := lambda.New(lcfg, reg, wk)
	if err != nil {
		return nil, err
	}
	handler.Handle("/2015-03-31/", lam.MaxBody(), false, lam)
	handler.Handle("GET /v1/async-invocations", 64<<10, true, lam.Records())
	handler.Handle("GET /v1/async-invocations/{id}", 64<<10, true, lam.Records())
	lam.Start(wk.Life())
	return lam, nil
}
