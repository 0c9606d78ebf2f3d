package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group, so Stop can signal everything it
// spawned at once, and has Linux kill it if this process dies first (a test binary that
// panics on `go test -timeout` never runs Stop). Pdeathsig fires when the forking OS
// thread exits; the Go runtime only ends threads whose goroutine exits while locked to
// it, which nothing in this harness does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
