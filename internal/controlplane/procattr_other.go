//go:build !linux

package controlplane

import "syscall"

// sysProcAttr puts a child in its own process group, so Stop can signal everything it
// spawned at once. Only Linux has a parent-death signal; elsewhere a test binary that dies
// without calling Stop leaves its children running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
