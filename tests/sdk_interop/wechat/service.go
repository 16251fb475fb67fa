package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// serviceClient calls the cardbind HTTP API with a service token.
type serviceClient struct {
	base  string
	token string
	// auditor is a bearer token of role auditor, to read the audit log.
	auditor string
	http    *http.Client
}

func newServiceClient(base, token, auditor string) *serviceClient {
	return &serviceClient{base: base, token: token, auditor: auditor, http: &http.Client{Timeout: 20 * time.Second}}
}

// response is a service answer.
type response struct {
	Status int
	Body   []byte
}

// JSON decodes the body as an object (nil when it is not one).
func (r response) JSON() map[string]any {
	var m map[string]any
	if json.Unmarshal(r.Body, &m) != nil {
		return nil
	}
	return m
}

// ErrorCode is the `error.code` of an error answer.
func (r response) ErrorCode() string {
	e, _ := r.JSON()["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (r response) String() string {
	b := string(r.Body)
	if len(b) > 400 {
		b = b[:400] + "…"
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, b)
}

func (s *serviceClient) do(ctx context.Context, method, rawURL string, header http.Header, body []byte) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{Status: resp.StatusCode, Body: b}, nil
}

// api calls an authenticated endpoint of the service.
func (s *serviceClient) api(ctx context.Context, method, path string, extra http.Header, body any) (response, error) {
	return s.as(ctx, s.token, method, path, extra, body)
}

// as is api with another bearer token.
func (s *serviceClient) as(ctx context.Context, token, method, path string, extra http.Header, body any) (response, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	h.Set("Accept", "application/json")
	var raw []byte
	if body != nil {
		raw = marshal(body)
		h.Set("Content-Type", "application/json")
	}
	for k, v := range extra {
		h[k] = v
	}
	return s.do(ctx, method, s.base+path, h, raw)
}

// waitReady polls GET /readyz until it answers 200.
func (s *serviceClient) waitReady(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	var last string
	for {
		r, err := s.do(ctx, http.MethodGet, s.base+"/readyz", nil, nil)
		if err == nil && r.Status == http.StatusOK {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = r.String()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %s", wait, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newIdempotencyKey is a random UUID (v4) text.
func newIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// bind binds a card for user through channel.
func (s *serviceClient) bind(ctx context.Context, user, card, channel string) (response, error) {
	h := http.Header{}
	h.Set("Idempotency-Key", newIdempotencyKey())
	body := map[string]any{
		"card_number":  card,
		"expiry_month": 12,
		"expiry_year":  2035,
		"cvv":          "123",
		"holder_name":  HolderName,
		"id_number":    "11010519491231002X",
		"phone":        "13800138000",
		"channel":      channel,
		"consent": map[string]any{
			"text_version": "v1",
			"text_sha256":  "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		},
	}
	return s.api(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(user)+"/cards", h, body)
}

func (s *serviceClient) card(ctx context.Context, user, id string) (map[string]any, error) {
	r, err := s.api(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(user)+"/cards/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK || r.JSON() == nil {
		return nil, fmt.Errorf("get card: %s", r)
	}
	return r.JSON(), nil
}

func (s *serviceClient) unbind(ctx context.Context, user, id string) (response, error) {
	return s.api(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(user)+"/cards/"+url.PathEscape(id), nil, nil)
}

// consent is the consent record of card in user's wallet (the newest one).
func (s *serviceClient) consent(ctx context.Context, user, card string) (map[string]any, error) {
	q := url.Values{"user_id": {user}, "limit": {"100"}}
	r, err := s.api(ctx, http.MethodGet, "/v1/consents?"+q.Encode(), nil, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("list consents: %s", r)
	}
	list, _ := r.JSON()["consents"].([]any)
	var found map[string]any
	for _, c := range list {
		if m, ok := c.(map[string]any); ok && m["card_id"] == card {
			found = m
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no consent for card %s: %s", card, r)
	}
	return found, nil
}

// notify posts a notification as WeChat Pay does (headers and body as is,
// no bearer token) to the absolute URL.
func (s *serviceClient) notify(ctx context.Context, rawURL string, n notification) (response, error) {
	return s.do(ctx, http.MethodPost, rawURL, n.Header, n.Body)
}

// channelTrouble lists the audit events of card that say the service could
// not use a channel's answer: a failed unsign (the card was unbound here
// only, "agreement may still be active") or a channel misconfiguration
// (among them an answer whose signature did not verify). Unbind answers
// 200 either way, so this is where a refused answer shows.
func (s *serviceClient) channelTrouble(ctx context.Context, card string) ([]string, error) {
	q := url.Values{"card_id": {card}, "limit": {"500"}}
	r, err := s.as(ctx, s.auditor, http.MethodGet, "/v1/audit/events?"+q.Encode(), nil, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("list audit events: %s", r)
	}
	events, ok := r.JSON()["events"].([]any)
	if !ok {
		return nil, fmt.Errorf("no events in %s", r)
	}
	var trouble []string
	for _, e := range events {
		m, _ := e.(map[string]any)
		if a := str(m, "action"); a == "binding.channel_unsign" || a == "channel.misconfigured" {
			trouble = append(trouble, fmt.Sprintf("%s %s: %s", a, str(m, "outcome"), str(m, "detail")))
		}
	}
	return trouble, nil
}
