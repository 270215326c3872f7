// Command coffer is the command-line front end of the Coffer backup storage
// engine. Every command is a thin layer over package engine.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"

	"coffer/engine"
)

// Exit codes (restic's numbers where restic has the same meaning).
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitPartial      = 3
	exitNoRepo       = 10
	exitRepoLocked   = 11
	exitWrongKey     = 12
	exitTenantLocked = 13
	exitDamage       = 14
	exitInterrupted  = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    error
  2    usage error (bad flag or argument)
  3    backup finished, but some source files could not be read
  10   repository does not exist
  11   repository is held by another process that serves nobody (after
       --retry-lock ran out), or the process that held it and served this
       command ended before the command finished: run it again
  12   wrong, missing or malformed master key, or a key file (master key,
       --identity, server key) that others than its owner may read
  13   tenant is locked
  14   check or scrub found damage
  130  interrupted`

// usageError marks a mistake in the command line (exit 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func main() {
	// COFFER_CPUPROFILE=FILE writes a CPU profile of the command (for
	// docs/benchmarks.md; go tool pprof FILE).
	if path := os.Getenv("COFFER_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
			f.Close()
		}
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code. It is main
// without the process: tests call it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return execute(ctx, &globals{stdin: stdin, stdout: stdout, stderr: stderr}, args)
}

// execute runs one command line with g's streams and returns the exit
// code. coffer serve calls it for the commands of its admin socket.
func execute(ctx context.Context, g *globals, args []string) int {
	g.args = args
	root := newRootCmd(g)
	root.SetArgs(args)
	root.SetIn(g.stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	c, err := root.ExecuteContextC(ctx)
	// This process lives until the commands it serves are done (holder.go).
	g.releaseHolder(ctx)
	g.flushNotify(ctx) // alerts of this command, and what waited in the outbox
	if c != nil {
		g.commandPath = strings.TrimPrefix(c.CommandPath(), "coffer ")
	}
	if err == nil {
		return exitOK
	}
	var fw forwardedError
	if errors.As(err, &fw) {
		return fw.code // the server printed the command's output and error
	}
	code := exitCode(err)
	if ctx.Err() != nil {
		code = exitInterrupted
		err = errors.New("interrupted; nothing half-written was recorded, run the command again")
	}
	printError(g, err, code)
	return code
}

// printError prints a command's error on stderr: a "warning:" line for each
// entry a partial backup left out, then one line "coffer: …". With --json
// the same as restic's JSON messages, one object a line:
// {"message_type":"error","error":{"message":…},"during":"archival","item":…}
// per entry and {"message_type":"exit_error","code":…,"message":…} last.
func printError(g *globals, err error, code int) {
	var pe *engine.PartialError
	errors.As(err, &pe)
	if !g.json {
		if pe != nil {
			for _, w := range pe.Warnings {
				fmt.Fprintln(g.stderr, "warning: cannot back up "+w)
			}
		}
		fmt.Fprintln(g.stderr, "coffer: "+message(err))
		return
	}
	enc := json.NewEncoder(g.stderr)
	if pe != nil {
		for _, w := range pe.Warnings {
			item, why := w, ""
			if i := strings.LastIndex(w, ": "); i >= 0 { // the reason is an errno's text
				item, why = w[:i], w[i+2:]
			}
			enc.Encode(jsonError{Type: "error", Error: &jsonMessage{Message: why}, During: "archival", Item: item})
		}
	}
	enc.Encode(jsonError{Type: "exit_error", Code: code, Message: message(err)})
}

// jsonError is an error or warning line of --json output (restic's shape).
type jsonError struct {
	Type    string       `json:"message_type"`
	Code    int          `json:"code,omitempty"`
	Message string       `json:"message,omitempty"`
	Error   *jsonMessage `json:"error,omitempty"`
	During  string       `json:"during,omitempty"`
	Item    string       `json:"item,omitempty"`
}

type jsonMessage struct {
	Message string `json:"message"`
}

// exitCode maps an error to the documented exit code.
func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.Is(err, engine.ErrUnaudited):
		return exitError // done, but not audited: whatever the audit's error was
	case errors.As(err, &ue), errors.Is(err, engine.ErrInvalid), isCobraUsage(err):
		return exitUsage
	case errors.Is(err, engine.ErrPartialBackup):
		return exitPartial
	case errors.Is(err, engine.ErrRepoNotFound):
		return exitNoRepo
	case errors.Is(err, engine.ErrRepoLocked):
		return exitRepoLocked
	case errors.Is(err, engine.ErrWrongKey), errors.Is(err, engine.ErrNoMasterKey), errors.Is(err, engine.ErrBadKeyFile),
		errors.Is(err, engine.ErrKeyFileExposed):
		return exitWrongKey
	case errors.Is(err, engine.ErrTenantLocked):
		return exitTenantLocked
	case errors.Is(err, engine.ErrCheckFailed):
		return exitDamage
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}

// isCobraUsage recognises cobra's own argument errors, which are plain errors.
func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "required flag"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// packagePrefix matches the package prefix of a sentinel error ("index: "),
// but not the same word ending a path ("/repo/index: ").
var packagePrefix = regexp.MustCompile(`(^|[\s(])(?:engine|repo|index|tree|chunk): `)

// message turns an error chain into one sentence for the user: package
// prefixes of the sentinel errors are dropped.
func message(err error) string {
	s := packagePrefix.ReplaceAllString(err.Error(), "$1")
	s = strings.Join(strings.Fields(s), " ") // one line, whatever the error held
	if engine.IndexDamaged(err) && !strings.Contains(s, "coffer index rebuild") {
		s = strings.TrimSuffix(s, ".") + "; the index is damaged: run coffer index rebuild"
	}
	if s != "" && !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
