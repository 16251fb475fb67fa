package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// received is one request the gateway got.
type received struct {
	Method string
	// URI is the request target exactly as sent (path and query).
	URI      string
	Body     []byte
	Verified bool
	// Refusal says why the Authorization was refused (when not Verified).
	Refusal string
	// SDKLayout: the Authorization is byte for byte what the SDK's
	// consts.HeaderAuthorizationFormat lays out for the same values.
	SDKLayout bool
	Status    int
}

func (r received) String() string {
	s := fmt.Sprintf("%s %s -> %d", r.Method, r.URI, r.Status)
	if !r.Verified {
		s += " (rejected: " + r.Refusal + ")"
	}
	return s
}

// contract is the gateway's papay contract, by out_contract_code.
type contract struct {
	State      string // NOT_SIGNED, SIGNED, TERMINATED
	ContractID string
	NotifyURL  string
}

// gateway is the fake WeChat Pay API v3 (papay) the service talks to.
type gateway struct {
	keys *keys

	mu        sync.Mutex
	requests  []received
	contracts map[string]*contract
	// Pre-sign bodies that verified, in order.
	presigns []map[string]any
	// Answers the SDK's response validator refused (should stay empty).
	answerFaults []string
	answers      int
}

func newGateway(k *keys) *gateway {
	return &gateway{keys: k, contracts: map[string]*contract{}}
}

// start serves on addr; it answers the bound address and a stop function.
func (g *gateway) start(addr string) (string, func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
	return l.Addr().String(), stop, nil
}

// snapshot copies what the gateway recorded.
func (g *gateway) snapshot() (reqs []received, presigns []map[string]any, faults []string, answers int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]received(nil), g.requests...), append([]map[string]any(nil), g.presigns...),
		append([]string(nil), g.answerFaults...), g.answers
}

func (g *gateway) contract(code string) (contract, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.contracts[code]
	if !ok {
		return contract{}, false
	}
	return *c, true
}

// userSigns marks the contract signed (as the user does in WeChat) and
// answers its new contract id.
func (g *gateway) userSigns(code string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.contracts[code]
	if !ok {
		return "", fmt.Errorf("no pre-signed contract %s", code)
	}
	if c.ContractID == "" {
		nonce, err := utils.GenerateNonce()
		if err != nil {
			return "", err
		}
		digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, nonce)
		c.ContractID = fmt.Sprintf("Wx%d%s", time.Now().Unix(), digits)
		if len(c.ContractID) > 32 {
			c.ContractID = c.ContractID[:32]
		}
	}
	c.State = "SIGNED"
	return c.ContractID, nil
}

// userTerminates ends a signed contract inside WeChat (no notification is
// sent); it answers whether the contract was signed.
func (g *gateway) userTerminates(code string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.contracts[code]
	if !ok || c.State != "SIGNED" {
		return false
	}
	c.State = "TERMINATED"
	return true
}

// authScheme is the Authorization scheme the SDK's client sends:
// "WECHATPAY2-" + the algorithm of its SHA256withRSA signer.
func authScheme() string {
	return "WECHATPAY2-" + (&signers.SHA256WithRSASigner{}).Algorithm()
}

// authParams parses `WECHATPAY2-SHA256-RSA2048 k="v",k="v",...`.
func authParams(header string) (map[string]string, error) {
	scheme := authScheme()
	rest, ok := strings.CutPrefix(header, scheme+" ")
	if !ok {
		return nil, fmt.Errorf("the Authorization scheme is not %s", scheme)
	}
	params := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("malformed Authorization parameter %q", part)
		}
		v = strings.TrimSpace(v)
		if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return nil, fmt.Errorf("Authorization parameter %s is not quoted", strings.TrimSpace(k))
		}
		params[strings.TrimSpace(k)] = v[1 : len(v)-1]
	}
	return params, nil
}

// verifyRequest checks a request's Authorization as WeChat Pay does, with
// the SDK's message layout and verifier. knownMerchant: the mchid is ours
// (so the refusal can be signed).
func (g *gateway) verifyRequest(ctx context.Context, method, uri, authorization string, body []byte) (knownMerchant, sdkLayout bool, err error) {
	if authorization == "" {
		return false, false, errors.New("no Authorization header")
	}
	p, err := authParams(authorization)
	if err != nil {
		return false, false, err
	}
	for _, k := range []string{"mchid", "nonce_str", "timestamp", "serial_no", "signature"} {
		if p[k] == "" {
			return p["mchid"] == MchID, false, fmt.Errorf("Authorization has no %s", k)
		}
	}
	if p["mchid"] != MchID {
		return false, false, fmt.Errorf("mchid %q is not %s", p["mchid"], MchID)
	}
	if p["serial_no"] != MerchantSerial {
		return true, false, fmt.Errorf("serial_no %q is not the merchant certificate serial %s", p["serial_no"], MerchantSerial)
	}
	ts, err := strconv.ParseInt(p["timestamp"], 10, 64)
	if err != nil {
		return true, false, fmt.Errorf("timestamp %q is not a number", p["timestamp"])
	}
	if math.Abs(float64(time.Now().Unix()-ts)) >= consts.FiveMinute {
		return true, false, fmt.Errorf("timestamp %d is more than 5 minutes off", ts)
	}
	// The message exactly as the SDK's client signs it.
	message := fmt.Sprintf(consts.SignatureMessageFormat, method, uri, ts, p["nonce_str"], string(body))
	if err := g.keys.merchant.Verify(ctx, p["serial_no"], message, p["signature"]); err != nil {
		return true, false, fmt.Errorf("SDK verifier: %w", err)
	}
	layout := fmt.Sprintf(consts.HeaderAuthorizationFormat, authScheme(),
		p["mchid"], p["nonce_str"], ts, p["serial_no"], p["signature"])
	return true, layout == authorization, nil
}

// answer is what the gateway sends back.
type answer struct {
	status int
	body   []byte // exact bytes (empty for 204)
	signed bool
}

func jsonAnswer(status int, v any) answer {
	return answer{status: status, body: marshal(v), signed: true}
}

// marshal is encoding/json without HTML escaping (as WeChat Pay writes
// JSON: `&` stays `&`), no trailing newline.
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// signedHeaders are the Wechatpay-* headers over body, made with the SDK's
// signer and the platform private key.
func (g *gateway) signedHeaders(ctx context.Context, body []byte) (http.Header, error) {
	return signHeaders(ctx, g.keys.platform, body)
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	rec := received{Method: r.Method, URI: r.RequestURI, Body: body}
	known, layout, verr := g.verifyRequest(ctx, r.Method, r.RequestURI, r.Header.Get(consts.Authorization), body)
	var ans answer
	if verr != nil {
		rec.Refusal = verr.Error()
		ans = jsonAnswer(http.StatusUnauthorized, map[string]any{
			"code":    "SIGN_ERROR",
			"message": "签名错误",
			"detail":  map[string]any{"location": "authorization", "detail": map[string]any{"issue": verr.Error()}},
		})
		// WeChat Pay cannot sign for a merchant it does not know.
		ans.signed = known
	} else {
		rec.Verified = true
		rec.SDKLayout = layout
		ans = g.route(r.Method, r.URL.Path, r.URL.RawQuery, body)
	}
	rec.Status = ans.status
	g.mu.Lock()
	g.requests = append(g.requests, rec)
	g.mu.Unlock()
	g.send(ctx, w, ans)
}

// send signs the answer, checks that the SDK's response validator accepts
// it, and writes it.
func (g *gateway) send(ctx context.Context, w http.ResponseWriter, ans answer) {
	h := w.Header()
	if ans.signed {
		sh, err := g.signedHeaders(ctx, ans.body)
		if err != nil {
			g.mu.Lock()
			g.answerFaults = append(g.answerFaults, "signing: "+err.Error())
			g.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for k, v := range sh {
			h[k] = v
		}
		// Self-check: what the official SDK's client would do with it.
		resp := &http.Response{
			StatusCode: ans.status,
			Header:     sh.Clone(),
			Body:       io.NopCloser(bytes.NewReader(ans.body)),
		}
		vErr := g.keys.responses.Validate(ctx, resp)
		g.mu.Lock()
		g.answers++
		if vErr != nil {
			g.answerFaults = append(g.answerFaults, vErr.Error())
		}
		g.mu.Unlock()
	}
	h.Set(consts.RequestID, "sdk-harness-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if len(ans.body) > 0 {
		h.Set(consts.ContentType, consts.ApplicationJSON)
	}
	w.WriteHeader(ans.status)
	_, _ = w.Write(ans.body)
}

func notFound(what string) answer {
	return jsonAnswer(http.StatusNotFound, map[string]any{"code": "RESOURCE_NOT_EXISTS", "message": what + "不存在"})
}

func paramError(msg string) answer {
	return jsonAnswer(http.StatusBadRequest, map[string]any{"code": "PARAM_ERROR", "message": msg})
}

// isContractCode: 1–32 ASCII letters and digits.
func isContractCode(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// route answers a verified request.
func (g *gateway) route(method, path, query string, body []byte) answer {
	g.mu.Lock()
	defer g.mu.Unlock()
	if method == http.MethodPost && path == PresignPath {
		var req map[string]any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&req); err != nil {
			return paramError("请求体不是 JSON")
		}
		g.presigns = append(g.presigns, req)
		if req["appid"] != AppID {
			return jsonAnswer(http.StatusBadRequest, map[string]any{"code": "APPID_MCHID_NOT_MATCH", "message": "appid和mch_id不匹配"})
		}
		if n, _ := req["plan_id"].(json.Number); n.String() != strconv.Itoa(PlanID) {
			return paramError("plan_id")
		}
		code, _ := req["out_contract_code"].(string)
		if !isContractCode(code) {
			return paramError("out_contract_code")
		}
		notifyURL, _ := req["contract_notify_url"].(string)
		if notifyURL == "" {
			return paramError("contract_notify_url")
		}
		if display, _ := req["contract_display_account"].(string); display == "" {
			return paramError("contract_display_account")
		}
		g.contracts[code] = &contract{State: "NOT_SIGNED", NotifyURL: notifyURL}
		return jsonAnswer(http.StatusOK, map[string]any{"redirect_url": redirectURL(code)})
	}
	prefix := fmt.Sprintf("%s%d/out-contract-code/", ContractPathPrefix, PlanID)
	if rest, ok := strings.CutPrefix(path, prefix); ok && query == "" {
		code, terminate := strings.CutSuffix(rest, "/terminate")
		c, found := g.contracts[code]
		switch {
		case terminate && method == http.MethodPost:
			var req map[string]any
			if err := json.Unmarshal(body, &req); err != nil {
				return paramError("请求体不是 JSON")
			}
			if remark, _ := req["contract_termination_remark"].(string); remark == "" {
				return paramError("contract_termination_remark")
			}
			if !found {
				return notFound("签约协议")
			}
			if c.State != "SIGNED" {
				return jsonAnswer(http.StatusBadRequest, map[string]any{"code": "CONTRACT_ALREADY_TERMINATED", "message": "协议已解约"})
			}
			c.State = "TERMINATED"
			return answer{status: http.StatusNoContent, signed: true}
		case !terminate && method == http.MethodGet:
			if !found {
				return notFound("签约协议")
			}
			v := map[string]any{
				"mchid": MchID, "appid": AppID, "plan_id": PlanID,
				"out_contract_code": code, "contract_state": c.State,
				"contract_display_account": HolderName,
			}
			if c.ContractID != "" {
				v["contract_id"] = c.ContractID
			}
			return jsonAnswer(http.StatusOK, v)
		}
	}
	return jsonAnswer(http.StatusNotFound, map[string]any{"code": "NOT_FOUND", "message": "无此接口"})
}

// redirectURL is the signing page the pre-sign answers for a contract.
func redirectURL(code string) string {
	return "https://wechatpay-sdk-harness.invalid/papay/entrust?pre_entrustweb_id=pe" + code + "&scene=h5"
}
