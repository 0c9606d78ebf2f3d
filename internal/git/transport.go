package git

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// go-git reads an HTTP answer for as long as the server sends one: a pack bomb, or an
// endless list of references, would fill the memory or the disk of the manager. Every
// HTTP(S) answer go-git reads in this process goes through a cap: the one of the remote
// operation that asked (set by the Cache in the request's context), or DefaultLimits'.
// go-git keeps its protocols in a global table, so this is installed once, here, before
// any Cache runs.
func init() {
	base := http.DefaultTransport.(*http.Transport).Clone()
	c := githttp.NewClient(&http.Client{Transport: cappedTransport{base: base}})
	client.InstallProtocol("http", c)
	client.InstallProtocol("https", c)
}

// cappedTransport counts the bytes of every answer against the budget of its request.
type cappedTransport struct {
	base http.RoundTripper
}

func (t cappedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, ok := req.Context().Value(budgetKey{}).(*budget)
	if !ok {
		b = &budget{limit: DefaultLimits.FetchBytes}
	}
	res.Body = &cappedBody{ReadCloser: res.Body, budget: b}
	return res, nil
}

type budgetKey struct{}

// budget is what one remote operation may still read, over all its requests.
type budget struct {
	limit int64
	read  atomic.Int64
	over  atomic.Bool
}

func (b *budget) take(n int) error {
	if b.read.Add(int64(n)) > b.limit {
		b.over.Store(true)
		return fmt.Errorf("%w: the server sent more than %s", ErrTooLarge, formatBytes(b.limit))
	}
	return nil
}

type cappedBody struct {
	io.ReadCloser
	budget *budget
}

func (c *cappedBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if berr := c.budget.take(n); berr != nil {
		return 0, berr
	}
	return n, err
}

// remoteOp is one bounded remote operation: a deadline, even when the caller set none, and
// a budget of bytes read.
type remoteOp struct {
	ctx    context.Context
	cancel context.CancelFunc
	limits Limits
	budget *budget
}

// remote starts a remote operation bounded by the cache's limits. The caller's earlier
// deadline, if any, still holds. Call op.cancel when done.
func (c *Cache) remote(ctx context.Context) *remoteOp {
	limits := c.Limits.orDefault()
	b := &budget{limit: limits.FetchBytes}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, budgetKey{}, b), limits.Timeout)
	return &remoteOp{ctx: ctx, cancel: cancel, limits: limits, budget: b}
}

// err says which bound, if any, ended the operation: go-git reports a cut answer as
// whatever it was decoding at the time.
func (op *remoteOp) err(err error) error {
	switch {
	case err == nil:
		return nil
	case op.budget.over.Load():
		if errors.Is(err, ErrTooLarge) {
			return err
		}
		return fmt.Errorf("%w: the server sent more than %s (the limit of one Git operation): %w", ErrTooLarge, formatBytes(op.limits.FetchBytes), err)
	case errors.Is(op.ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("no complete answer before the deadline (at most %s for one Git operation): %w: %w", op.limits.Timeout, context.DeadlineExceeded, err)
	}
	return err
}
