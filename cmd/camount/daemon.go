package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// daemonEnv marks the background child of `camount mount --daemon`.
const daemonEnv = "CAMOUNT_DAEMON"

// isDaemonChild reports whether this process is the background child.
func isDaemonChild() bool { return os.Getenv(daemonEnv) == "1" }

// daemonize runs this same command line again as a background process in a
// session of its own, relays what it prints until it is mounted (its
// ready line) or has failed, and returns: nil once it is mounted, else its
// error output as the error. The child sends its output here until it is
// ready, then to logFile (default /dev/null; see daemonReady).
func daemonize(e *env) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--daemon: cannot find camount's own executable: %w", err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), daemonEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no terminal: Ctrl-C and hang-ups of this shell do not reach it
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("--daemon: starting the background process: %w", err)
	}
	w.Close()
	defer r.Close()
	// The child closes its end when it is ready (it moves its output to
	// the log) or when it exits.
	var ready string
	var out strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if ready == "" && strings.HasPrefix(line, "camount: mounted ") {
			ready = line
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if ready != "" {
		io.WriteString(e.stderr, out.String()) // warnings before it was ready
		fmt.Fprintf(e.stdout, "%s (background process %d)\n", strings.Replace(ready, "; stop with Ctrl-C or", "; stop with", 1), cmd.Process.Pid)
		cmd.Process.Release()
		return nil
	}
	werr := cmd.Wait()
	msg := strings.TrimSpace(out.String())
	// The child printed "camount mount: <error>"; do not say it twice.
	msg = strings.TrimPrefix(msg, "camount mount: ")
	if msg == "" {
		msg = fmt.Sprintf("the background process ended before mounting (%v)", werr)
	}
	return errors.New(msg)
}

// daemonReady is called by the background child once it is mounted: its
// standard output and error (which the parent reads) move to logFile, or to
// /dev/null without one, so the parent sees the end of its output and
// returns, and later log lines have somewhere to go.
func daemonReady(logFile string) error {
	p := logFile
	if p == "" {
		p = os.DevNull
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("--log-file: %w", err)
	}
	defer f.Close()
	for _, fd := range []int{1, 2} {
		if err := unix.Dup2(int(f.Fd()), fd); err != nil {
			return fmt.Errorf("--daemon: redirecting output: %w", err)
		}
	}
	return nil
}
