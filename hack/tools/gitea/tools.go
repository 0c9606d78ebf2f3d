//go:build tools

// Package tools pins the Gitea server that tests use as a real forge (Git over HTTP and a
// pull-request API).
package tools

import _ "code.gitea.io/gitea"
