package oci

import (
	"io"
	"net/http"
	"sync/atomic"
)

// Stats count a client's traffic: requests sent and response body bytes
// read.
type Stats struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

// counter is an http.RoundTripper that counts what goes through it.
type counter struct {
	base            http.RoundTripper
	requests, bytes atomic.Int64
}

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.bytes}
	return resp, nil
}

func (c *counter) snapshot() Stats {
	return Stats{Requests: c.requests.Load(), Bytes: c.bytes.Load()}
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
