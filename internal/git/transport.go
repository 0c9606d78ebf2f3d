package git

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/net/proxy"
)

// go-git reads an HTTP answer for as long as the server sends one: a pack bomb, or an
// endless list of references, would fill the memory or the disk of the manager. Every
// HTTP(S) answer go-git reads in this process goes through a cap: the one of the remote
// operation that asked (set by the Cache in the request's context), or DefaultLimits'.
// go-git keeps its protocols in a global table, so this is installed once, here, before
// any Cache runs. Headers are bounded by net/http (MaxResponseHeaderBytes). go-git builds a
// transport of its own, without the cap, for endpoints with TLS or proxy options: the
// Cache sets none for HTTP(S) (HTTPS_PROXY from the environment still applies, through
// base).
func init() {
	base := http.DefaultTransport.(*http.Transport).Clone()
	c := githttp.NewClient(&http.Client{Transport: cappedTransport{base: base}})
	client.InstallProtocol("http", c)
	client.InstallProtocol("https", c)

	// go-git's SSH transport takes no context for its connection: dialling honours a
	// timeout, but the handshake and everything after wait for as long as the server
	// likes, and nothing counts the bytes. The one place a caller reaches that connection
	// is the dialer of a proxy, named by the operation's ProxyOptions: this one dials as
	// go-git would (through ALL_PROXY when set) and bounds the connection by the
	// operation's deadline and budget.
	proxy.RegisterDialerType(boundedScheme, func(u *url.URL, _ proxy.Dialer) (proxy.Dialer, error) {
		op, ok := operations.Load(u.Host)
		if !ok {
			return nil, fmt.Errorf("no remote operation %s is under way", u.Host)
		}
		return boundedDialer{op: op.(*remoteOp)}, nil
	})
}

// boundedScheme names, as a proxy URL, the remote operation whose bounds an SSH
// connection takes.
const boundedScheme = "immutable-release-bounded"

// operations are the remote operations under way, by id, for boundedDialer.
var (
	operations  sync.Map
	operationID atomic.Uint64
)

// boundedDialer dials an SSH server for one remote operation.
type boundedDialer struct {
	op *remoteOp
}

func (d boundedDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d boundedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.op.ctx, cancel)
	defer stop()
	conn, err := proxy.Dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := d.op.ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			conn.Close()
			return nil, err
		}
	}
	// A cancelled operation ends the reads and writes under way at once.
	context.AfterFunc(d.op.ctx, func() { _ = conn.SetDeadline(time.Now()) })
	return &countingConn{Conn: conn, budget: d.op.budget}, nil
}

// countingConn counts what an SSH server sends against the operation's budget.
type countingConn struct {
	net.Conn
	budget *budget
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if berr := c.budget.take(n); berr != nil {
		return 0, berr
	}
	return n, err
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
	id     string
	// timeout is the time the operation had: the limit, or the caller's earlier deadline
	// (a release's spec.git.timeout).
	timeout time.Duration
}

// remote starts a remote operation bounded by the cache's limits. The caller's earlier
// deadline, if any, still holds. Call op.cancel when done.
func (c *Cache) remote(ctx context.Context) *remoteOp {
	limits := c.Limits.orDefault()
	b := &budget{limit: limits.FetchBytes}
	timeout := limits.Timeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
		timeout = time.Until(d).Round(time.Second)
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, budgetKey{}, b), limits.Timeout)
	op := &remoteOp{ctx: ctx, limits: limits, budget: b, id: "op-" + strconv.FormatUint(operationID.Add(1), 10), timeout: timeout}
	operations.Store(op.id, op)
	op.cancel = func() {
		operations.Delete(op.id)
		cancel()
	}
	return op
}

// proxyFor is what bounds an SSH connection to repoURL by this operation (see init);
// nothing for other schemes, whose answers go through cappedTransport.
func (op *remoteOp) proxyFor(repoURL string) transport.ProxyOptions {
	if u, err := url.Parse(repoURL); err != nil || u.Scheme != "ssh" {
		return transport.ProxyOptions{}
	}
	return transport.ProxyOptions{URL: boundedScheme + "://" + op.id}
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
	case errors.Is(op.ctx.Err(), context.DeadlineExceeded) || op.pastDeadline():
		return fmt.Errorf("no complete answer before the deadline (at most %s for one Git operation): %w: %w", op.timeout, context.DeadlineExceeded, err)
	}
	return err
}

// pastDeadline is true once the deadline is reached: an SSH connection's own deadline can
// end a read a moment before the context's timer fires.
func (op *remoteOp) pastDeadline() bool {
	d, ok := op.ctx.Deadline()
	return ok && !time.Now().Before(d)
}
