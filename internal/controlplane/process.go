package controlplane

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// stopGracePeriod is how long a child process gets to exit after SIGTERM before its whole
// process group is killed.
const stopGracePeriod = 10 * time.Second

// process is one child process (kube-controller-manager, kube-scheduler, kwok) with its
// output in a log file named after it.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd

	// exited is closed once the process has been reaped; err then holds how it ended.
	exited chan struct{}
	err    error
}

// startProcess runs binary with args in its own process group, so that Stop can signal the
// process and anything it spawned at once, with stdout and stderr in logDir/<name>.log.
func startProcess(name, binary string, args []string, logDir string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating log file for %s: %w", name, err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// exitError reports, without blocking, whether the process has already ended. A child
// that ends on its own during start-up has failed; the error says where to read why.
func (p *process) exitError() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v (log: %s)", p.name, p.err, p.logPath)
	default:
		return nil
	}
}

// stop sends SIGTERM to the process group, waits up to stopGracePeriod and then kills the
// group. It returns once the process has been reaped.
func (p *process) stop() error {
	pgid := p.cmd.Process.Pid // Setpgid makes the child the leader of a group with its pid.
	select {
	case <-p.exited:
		// It ended on its own: still sweep its group for anything it left behind.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return nil
	default:
	}
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	timer := time.NewTimer(stopGracePeriod)
	defer timer.Stop()
	select {
	case <-p.exited:
		// Children of the leader may outlive it; none of these binaries fork, but a group
		// kill is cheap insurance against leaks.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return nil
	case <-timer.C:
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.exited
	return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed (log: %s)", p.name, stopGracePeriod, p.logPath)
}
