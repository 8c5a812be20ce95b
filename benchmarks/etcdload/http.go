package main

// The HTTP/1.1 paths: kvtrace's client API (-api kvtrace) and etcd's JSON gateway
// (-api etcd-json), driven by the same small client so that the two compare fairly.
//
// Each client owns one keep-alive connection (as kvtrace bench's clients do), writes one
// request and reads one response at a time, with buffers reused between requests. Its own CPU
// per operation measured 16-24 µs on the 2-core machine, about 0.6x the Python generator's in
// the same run (benchmarks/results/kv-loadgen-2026-12-07-8c28735.json): mostly the write and
// read system calls of TCP over loopback, which any client pays. Responses with Content-Length, chunked bodies and
// "Connection: close" are handled; the connection is reopened after a failure.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

const maxHead = 64 << 10 // a response head longer than this is an error

// httpAPI says how one operation of an HTTP API is written and which answers count as done.
type httpAPI struct {
	name        string
	readyPath   string
	consistency string
	value       []byte
	b64Value    string
}

func newHTTPAPI(cfg config, value []byte) httpAPI {
	api := httpAPI{name: cfg.api, consistency: cfg.consistency, value: value}
	if cfg.api == apiKvtrace {
		api.readyPath = "/readyz"
	} else {
		api.readyPath = "/health"
		api.b64Value = base64.StdEncoding.EncodeToString(value)
	}
	return api
}

// request appends one request for key to buf: a put (write) or a read.
func (a httpAPI) request(buf []byte, host string, write bool, key string) []byte {
	var method, path string
	var body []byte
	if a.name == apiKvtrace {
		path = "/v1/kv/" + quoteAll(key) + "?consistency=" + a.consistency
		method = "GET"
		if write {
			method, body = "PUT", a.value
		}
	} else {
		k := base64.StdEncoding.EncodeToString([]byte(key))
		method, path = "POST", "/v3/kv/range"
		if write {
			path = "/v3/kv/put"
			body = []byte(`{"key":"` + k + `","value":"` + a.b64Value + `"}`)
		} else {
			body = []byte(`{"key":"` + k + `"}`)
		}
	}
	buf = append(buf, method...)
	buf = append(buf, ' ')
	buf = append(buf, path...)
	buf = append(buf, " HTTP/1.1\r\nHost: "...)
	buf = append(buf, host...)
	if a.name != apiKvtrace {
		buf = append(buf, "\r\nContent-Type: application/json"...)
	}
	if body != nil {
		buf = append(buf, "\r\nContent-Length: "...)
		buf = strconv.AppendInt(buf, int64(len(body)), 10)
	}
	buf = append(buf, "\r\n\r\n"...)
	return append(buf, body...)
}

// done says whether a status answers the operation: 2xx, or a read's 404 on kvtrace (a key
// never written), as kvnode.bench counts them.
func (a httpAPI) done(status int, write bool) bool {
	return (status >= 200 && status < 300) || (status == 404 && !write && a.name == apiKvtrace)
}

// httpConn is one client's keep-alive connection to one endpoint.
type httpConn struct {
	api     httpAPI
	addr    string // HOST:PORT
	timeout time.Duration
	conn    net.Conn
	r       *bufio.Reader
	out     []byte
	body    []byte
}

func newHTTPConn(api httpAPI, endpoint string, timeout time.Duration) (*httpConn, error) {
	addr, err := hostPort(api.name, endpoint)
	if err != nil {
		return nil, err
	}
	return &httpConn{api: api, addr: addr, timeout: timeout}, nil
}

// hostPort is the HOST:PORT of an http:// endpoint (TLS endpoints are not supported here).
func hostPort(api, endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" {
		return "", fmt.Errorf("-endpoints: expected http://HOST:PORT with -api %s, got %q",
			api, endpoint)
	}
	return u.Host, nil
}

func (c *httpConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.r = nil, nil
	}
}

// op sends one request (put or read of key) and reads its answer: nil when it answered the
// operation, else an error naming the status or the failure (the connection is then closed).
func (c *httpConn) op(write bool, key string) error {
	status, err := c.roundTrip(c.api.request(c.out[:0], c.addr, write, key))
	if err != nil {
		c.close()
		return err
	}
	if !c.api.done(status, write) {
		return fmt.Errorf("%d %q", status, truncate(c.body, 120))
	}
	return nil
}

// get asks path and returns the status (the readiness check before the run).
func (c *httpConn) get(path string) (int, error) {
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + c.addr + "\r\n\r\n")
	status, err := c.roundTrip(req)
	if err != nil {
		c.close()
	}
	return status, err
}

func (c *httpConn) roundTrip(req []byte) (int, error) {
	c.out = req
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, c.timeout)
		if err != nil {
			return 0, err
		}
		if tcp, ok := conn.(*net.TCPConn); ok {
			_ = tcp.SetNoDelay(true)
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 16<<10)
	}
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	if _, err := c.conn.Write(req); err != nil {
		return 0, err
	}
	for {
		status, closeAfter, err := c.readResponse()
		if err != nil {
			return 0, err
		}
		if status >= 100 && status < 200 {
			continue // an interim answer: the real one follows
		}
		if closeAfter {
			c.close()
		}
		return status, nil
	}
}

// readResponse reads one response into c.body: its status and whether the server closes.
func (c *httpConn) readResponse() (int, bool, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, false, fmt.Errorf("reading the status line: %w", err)
	}
	status, err := parseStatus(line)
	if err != nil {
		return 0, false, err
	}
	length, chunked, closeAfter, err := c.readHeaders()
	if err != nil {
		return 0, false, err
	}
	c.body = c.body[:0]
	switch {
	case chunked:
		err = c.readChunked()
	case length > 0:
		c.body = grow(c.body, length)
		_, err = io.ReadFull(c.r, c.body)
	case length < 0 && status >= 200 && status != 204 && status != 304:
		return 0, false, errors.New("response without Content-Length or chunked body")
	}
	return status, closeAfter, err
}

func parseStatus(line []byte) (int, error) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, fmt.Errorf("malformed status line %q", truncate(line, 80))
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("malformed status line %q", truncate(line, 80))
	}
	return status, nil
}

// readHeaders reads the header lines: Content-Length (-1 if absent), chunked, Connection: close.
func (c *httpConn) readHeaders() (int, bool, bool, error) {
	length, chunked, closeAfter, total := -1, false, false, 0
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, false, false, fmt.Errorf("reading the headers: %w", err)
		}
		if total += len(line); total > maxHead {
			return 0, false, false, errors.New("response head over 64 KiB")
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return length, chunked, closeAfter, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, false, fmt.Errorf("malformed header line %q", truncate(line, 80))
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, false, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "connection"):
			closeAfter = asciiEqualFold(value, "close")
		}
	}
}

func (c *httpConn) readChunked() error {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("reading a chunk size: %w", err)
		}
		sizeText, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		size, err := strconv.ParseUint(string(bytes.TrimSpace(sizeText)), 16, 31)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", truncate(line, 40))
		}
		if size == 0 { // trailers, then the blank line
			_, _, _, err = c.readHeaders()
			return err
		}
		start := len(c.body)
		c.body = grow(c.body, start+int(size))
		if _, err = io.ReadFull(c.r, c.body[start:]); err != nil {
			return err
		}
		if _, err = c.r.Discard(2); err != nil { // the chunk's CRLF
			return err
		}
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		nb := make([]byte, n, max(n, 2*cap(b)))
		copy(nb, b)
		return nb
	}
	return b[:n]
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x := b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != s[i] {
			return false
		}
	}
	return true
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n])
	}
	return string(b)
}

// httpClients is the HTTP paths' client set: one connection per client, round-robin over the
// endpoints, each checked to answer its readiness path before the run.
func httpClients(cfg config, value []byte) ([]kvClient, error) {
	api := newHTTPAPI(cfg, value)
	clients := make([]kvClient, 0, cfg.clients)
	for i := range cfg.clients {
		ep := cfg.endpoints[i%len(cfg.endpoints)]
		conn, err := newHTTPConn(api, ep, cfg.timeout)
		if err != nil {
			return nil, err
		}
		if i < len(cfg.endpoints) {
			status, err := conn.get(api.readyPath)
			if err == nil && status != 200 {
				err = fmt.Errorf("%s answered %d", api.readyPath, status)
			}
			if err != nil {
				closeClients(clients)
				conn.close()
				return nil, fmt.Errorf("endpoint %s does not answer: %w", ep, err)
			}
		}
		clients = append(clients, conn)
	}
	return clients, nil
}

// quoteAll percent-encodes every byte but the unreserved ones (A-Z a-z 0-9 - . _ ~), as
// kvnode.client.kv_path does with Python's quote(key, safe=""): a "/" in a key is %2F.
func quoteAll(key string) string {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(key)+8)
	for i := range len(key) {
		b := key[i]
		switch {
		case 'A' <= b && b <= 'Z', 'a' <= b && b <= 'z', '0' <= b && b <= '9',
			b == '-', b == '.', b == '_', b == '~':
			out = append(out, b)
		default:
			out = append(out, '%', hex[b>>4], hex[b&15])
		}
	}
	return string(out)
}
