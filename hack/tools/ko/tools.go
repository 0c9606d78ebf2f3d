//go:build tools

// Package tools pins ko, which builds the manager image (make dist). The baseimage command
// beside it builds the base image and serves it to ko from a registry on loopback.
package tools

import (
	_ "github.com/google/ko"
)
