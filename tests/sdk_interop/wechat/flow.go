package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// cardOfCode reads the card id a per-bind out_contract_code names: the
// card's UUID in base 62 (22 digits, in big.Int's digit order), then the
// bind's attempt (6 digits).
func cardOfCode(code string) (string, bool) {
	if len(code) != 28 {
		return "", false
	}
	n, ok := new(big.Int).SetString(code[:22], 62)
	if !ok || n.BitLen() > 128 {
		return "", false
	}
	if a, ok := new(big.Int).SetString(code[22:], 62); !ok || a.BitLen() > 32 {
		return "", false
	}
	var b [16]byte
	n.FillBytes(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true
}

// contractCode is the out_contract_code the service pre-signed for the
// card: the latest of the gateway's verified pre-signs whose code names
// it ("" when none does).
func contractCode(cardID string, presigns []map[string]any) string {
	for i := len(presigns) - 1; i >= 0; i-- {
		c, _ := presigns[i]["out_contract_code"].(string)
		if id, ok := cardOfCode(c); ok && id == cardID {
			return c
		}
	}
	return ""
}

// str reads a string field of a JSON object (nested by dotted path).
func str(m map[string]any, path string) string {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = o[k]
	}
	s, _ := cur.(string)
	return s
}

// js is v as compact JSON, for failure details.
func js(v any) string { return string(marshal(v)) }

func is2xx(status int) bool { return status >= 200 && status < 300 }

// requestsTo counts verified requests with this method and path.
func requestsTo(reqs []received, method, uri string) (verified, rejected int) {
	for _, r := range reqs {
		if r.Method == method && r.URI == uri {
			if r.Verified {
				verified++
			} else {
				rejected++
			}
		}
	}
	return
}

func listRequests(reqs []received) string {
	parts := make([]string, 0, len(reqs))
	for _, r := range reqs {
		parts = append(parts, r.String())
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// runFlow binds, signs, replays, forges and unbinds, checking each step.
func runFlow(ctx context.Context, rep *report, gw *gateway, svc *serviceClient, k *keys) {
	user := "wxsdk-" + randomHex(6)
	expectedNotifyURL := svc.base + NotifyPath

	// 1. Bind: the service pre-signs a contract at the gateway.
	r, err := svc.bind(ctx, user, VisaCard, "wechat")
	if err != nil {
		rep.fail("bind through the wechat channel", "%v", err)
		return
	}
	v := r.JSON()
	cardID := str(v, "id")
	if r.Status != http.StatusCreated || str(v, "status") != "pending_verification" || str(v, "channel") != "wechat" ||
		str(v, "next_action.type") != "redirect" || cardID == "" {
		reqs, _, faults, _ := gw.snapshot()
		rep.fail("bind through the wechat channel", "want 201 pending_verification with a redirect, got %s; gateway saw %s; answer faults %v",
			r, listRequests(reqs), faults)
		return
	}
	_, presigned, _, _ := gw.snapshot()
	code := contractCode(cardID, presigned)
	if code == "" {
		rep.fail("bind through the wechat channel", "no pre-sign names card %s by a 28-character code (got %s)", cardID, js(presigned))
		return
	}
	if got := str(v, "next_action.url"); got != redirectURL(code) {
		rep.fail("bind through the wechat channel", "redirect URL %q is not the one the gateway answered (%q)", got, redirectURL(code))
	} else {
		rep.ok(fmt.Sprintf("bind: 201 pending_verification, card %s, redirect URL as the gateway answered", cardID))
	}

	reqs, presigns, _, _ := gw.snapshot()
	if n, bad := requestsTo(reqs, http.MethodPost, PresignPath); n != 1 || bad != 0 {
		rep.fail("pre-entrust-sign request verified with the SDK verifier", "%d verified, %d rejected: %s", n, bad, listRequests(reqs))
	} else {
		rep.ok("pre-entrust-sign request verified with the SDK verifier (consts.SignatureMessageFormat, merchant key, serial_no " + MerchantSerial + ", mchid " + MchID + ")")
	}
	var presign map[string]any
	for _, p := range presigns {
		if p["out_contract_code"] == code {
			presign = p
		}
	}
	var notifyURL string
	if presign == nil {
		rep.fail("pre-entrust-sign body", "no verified pre-sign for out_contract_code %s (got %s)", code, js(presigns))
	} else {
		notifyURL, _ = presign["contract_notify_url"].(string)
		planID, _ := presign["plan_id"].(json.Number)
		var problems []string
		if presign["appid"] != AppID {
			problems = append(problems, fmt.Sprintf("appid %v", presign["appid"]))
		}
		if planID.String() != strconv.Itoa(PlanID) {
			problems = append(problems, fmt.Sprintf("plan_id %v", presign["plan_id"]))
		}
		if notifyURL != expectedNotifyURL {
			problems = append(problems, fmt.Sprintf("contract_notify_url %q, want %q (notifications go to the latter)", notifyURL, expectedNotifyURL))
		}
		if presign["contract_display_account"] != HolderName {
			problems = append(problems, fmt.Sprintf("contract_display_account %v", presign["contract_display_account"]))
		}
		if len(problems) > 0 {
			rep.fail("pre-entrust-sign body", "%s", strings.Join(problems, ", "))
		} else {
			rep.ok(fmt.Sprintf("pre-entrust-sign body: out_contract_code %s, appid %s, plan_id %d, contract_notify_url %s, contract_display_account %s (non-ASCII, signed as raw UTF-8)",
				code, AppID, PlanID, notifyURL, HolderName))
		}
	}
	if c, ok := gw.contract(code); !ok || c.State != "NOT_SIGNED" {
		rep.fail("contract pre-signed at the gateway", "contract %s: %+v (found %v)", code, c, ok)
	}
	if notifyURL != expectedNotifyURL {
		// Reported above; post where the service listens, never elsewhere.
		notifyURL = expectedNotifyURL
	}

	// 2. The user signs in WeChat: the ADD notification.
	contractID, err := gw.userSigns(code)
	if err != nil {
		rep.fail("user signs", "%v", err)
		return
	}
	eventID := "EV-sdk-" + randomHex(8)
	resource := map[string]any{
		"mchid": MchID, "appid": AppID, "plan_id": PlanID,
		"out_contract_code": code, "contract_id": contractID,
		"change_type": "ADD", "operate_time": "2026-01-01T10:00:00+08:00",
		"contract_display_account": HolderName,
	}
	signed, err := newNotification(ctx, k.platform, k.apiv3Key, eventID, "PAPAY.SIGN", "签约成功", resource)
	if err != nil {
		rep.fail("build the contract-signed notification", "%v", err)
		return
	}
	id, content, err := sdkParse(ctx, k, notifyURL, signed)
	if err == nil && (id != eventID || content["contract_id"] != contractID || content["out_contract_code"] != code || content["change_type"] != "ADD") {
		err = fmt.Errorf("the SDK read id %q and resource %v", id, content)
	}
	rep.check("contract-signed notification verified and decrypted by the SDK's notify handler (ParseNotifyRequest)", err)

	r, err = svc.notify(ctx, notifyURL, signed)
	if err != nil || !is2xx(r.Status) || str(r.JSON(), "code") != "SUCCESS" {
		rep.fail("contract-signed notification accepted", "want 2xx {\"code\":\"SUCCESS\"}, got %s (err %v)", r, err)
	} else {
		rep.ok(fmt.Sprintf("contract-signed notification (summary 签约成功 as raw UTF-8 in the signed body) accepted: HTTP %d %s", r.Status, bytes.TrimSpace(r.Body)))
	}
	card, err := svc.card(ctx, user, cardID)
	if err != nil || str(card, "status") != "active" {
		rep.fail("card active after signing", "card %s (err %v)", js(card), err)
	} else {
		rep.ok("card active after signing")
	}
	consent, err := svc.consent(ctx, user, cardID)
	if err != nil || str(consent, "agreement_id") != contractID {
		rep.fail("consent agreement_id is the contract_id", "want %s, consent %s (err %v)", contractID, js(consent), err)
	} else {
		rep.ok("consent agreement_id is the contract_id " + contractID)
	}

	// 3. Replay: acknowledged, nothing changes.
	r, err = svc.notify(ctx, notifyURL, signed)
	after, cerr := svc.card(ctx, user, cardID)
	if err != nil || !is2xx(r.Status) || cerr != nil || !reflect.DeepEqual(card, after) {
		rep.fail("replayed notification acknowledged without a change", "got %s (err %v); card before %s after %s (err %v)", r, err, js(card), js(after), cerr)
	} else {
		rep.ok(fmt.Sprintf("replayed notification: HTTP %d, card unchanged", r.Status))
	}

	// 4. Forgeries: refused by the SDK and by the service; card unchanged.
	tampered := signed.clone()
	tampered.Body = bytes.Replace(tampered.Body, []byte(eventID), []byte(eventID+"X"), 1)
	stranger, err := strangerSigner()
	if err != nil {
		rep.fail("stranger key", "%v", err)
		return
	}
	forged, err := newNotification(ctx, stranger, k.apiv3Key, "EV-sdk-forged-"+randomHex(4), "PAPAY.TERMINATE", "解约成功",
		map[string]any{"mchid": MchID, "appid": AppID, "plan_id": PlanID, "out_contract_code": code,
			"contract_id": contractID, "change_type": "DELETE", "operate_time": "2026-01-01T11:00:00+08:00",
			"contract_termination_mode": "USER"})
	if err != nil {
		rep.fail("build the forged notification", "%v", err)
		return
	}
	unsigned := signed.clone()
	for _, h := range []string{"Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial", "Wechatpay-Signature", "Wechatpay-Signature-Type"} {
		unsigned.Header.Del(h)
	}
	for _, f := range []struct {
		what string
		n    notification
	}{
		{"tampered notification (body changed after signing)", tampered},
		{"notification signed with another RSA key under the platform serial", forged},
		{"notification without Wechatpay-* headers", unsigned},
	} {
		if _, _, err := sdkParse(ctx, k, notifyURL, f.n); err == nil {
			rep.fail(f.what+" refused by the SDK's notify handler", "the SDK accepted it: the negative control is wrong")
		}
		r, err := svc.notify(ctx, notifyURL, f.n)
		if err != nil || r.Status != http.StatusUnauthorized || r.ErrorCode() != "invalid_signature" {
			rep.fail(f.what+" refused", "want 401 invalid_signature, got %s (err %v)", r, err)
		} else {
			rep.ok(f.what + " refused by the SDK and by the service: 401 invalid_signature")
		}
	}
	after, cerr = svc.card(ctx, user, cardID)
	if cerr != nil || !reflect.DeepEqual(card, after) {
		rep.fail("card unchanged by the refused notifications", "before %s after %s (err %v)", js(card), js(after), cerr)
	} else {
		rep.ok("card unchanged by the refused notifications")
	}

	// 5. Unbind: one verified terminate call for the contract.
	r, err = svc.unbind(ctx, user, cardID)
	if err != nil || r.Status != http.StatusOK || str(r.JSON(), "status") != "inactive" {
		rep.fail("unbind", "want 200 inactive, got %s (err %v)", r, err)
	} else {
		rep.ok("unbind: 200 inactive")
	}
	terminate := fmt.Sprintf("%s%d/out-contract-code/%s/terminate", ContractPathPrefix, PlanID, code)
	reqs, _, _, _ = gw.snapshot()
	n, bad := requestsTo(reqs, http.MethodPost, terminate)
	total := 0
	for _, q := range reqs {
		if strings.HasSuffix(q.URI, "/terminate") {
			total++
		}
	}
	if n != 1 || bad != 0 || total != 1 {
		rep.fail("exactly one verified terminate call", "%d verified, %d rejected for %s, %d terminate calls in all: %s", n, bad, terminate, total, listRequests(reqs))
	} else {
		rep.ok("exactly one verified terminate call: POST " + terminate)
	}
	if c, _ := gw.contract(code); c.State != "TERMINATED" {
		rep.fail("contract terminated at the gateway", "state %q", c.State)
	}
	if consent, err := svc.consent(ctx, user, cardID); err != nil || str(consent, "revoked_at") == "" {
		rep.fail("consent revoked after unbind", "consent %s (err %v)", js(consent), err)
	} else {
		rep.ok("consent revoked after unbind")
	}
	// The service took the SDK-signed 204: a refused or unverifiable answer
	// leaves a failed binding.channel_unsign event.
	if trouble, err := svc.channelTrouble(ctx, cardID); err != nil || len(trouble) != 0 {
		rep.fail("the service took the terminate answer", "events %v (err %v)", trouble, err)
	} else {
		rep.ok("the service took the terminate answer (no failed unsign in the audit log)")
	}

	// 6. A second card whose contract the user ends inside WeChat, the
	// DELETE notification lost: unbinding it, the service's terminate is
	// refused (already terminated) and it reads the contract instead.
	lostNotification(ctx, rep, gw, svc, user)

	// 7. Every request verified; every answer passed the SDK's validator.
	reqs, _, faults, answers := gw.snapshot()
	rejected, layoutDiffers := 0, 0
	for _, q := range reqs {
		if !q.Verified {
			rejected++
		} else if !q.SDKLayout {
			layoutDiffers++
		}
	}
	if rejected != 0 {
		rep.fail("zero rejected requests", "%d of %d rejected: %s", rejected, len(reqs), listRequests(reqs))
	} else {
		what := fmt.Sprintf("zero rejected requests: %d requests, each verified with the SDK verifier %s", len(reqs), listRequests(reqs))
		if layoutDiffers == 0 {
			what += "; every Authorization byte-identical to consts.HeaderAuthorizationFormat"
		} else {
			what += fmt.Sprintf("; %d Authorization headers laid out unlike consts.HeaderAuthorizationFormat (still valid)", layoutDiffers)
		}
		rep.ok(what)
	}
	if len(faults) != 0 || answers == 0 {
		rep.fail("answers accepted by the SDK's response validator", "%d signed answers, faults: %v", answers, faults)
	} else {
		rep.ok(fmt.Sprintf("all %d signed answers accepted by the SDK's response validator before sending", answers))
	}
}

// lostNotification binds a second card (Mastercard), signs it, ends the
// contract at the gateway without telling the service, then unbinds it:
// the service's terminate gets CONTRACT_ALREADY_TERMINATED and its query
// (GET of the contract) gets a signed answer carrying non-ASCII text.
func lostNotification(ctx context.Context, rep *report, gw *gateway, svc *serviceClient, user string) {
	const what = "second card: unbind after a lost DELETE notification"
	r, err := svc.bind(ctx, user, MastercardCard, "wechat")
	v := r.JSON()
	cardID := str(v, "id")
	if err != nil || r.Status != http.StatusCreated || str(v, "status") != "pending_verification" || cardID == "" {
		rep.fail(what, "bind: want 201 pending_verification, got %s (err %v)", r, err)
		return
	}
	_, presigns, _, _ := gw.snapshot()
	code := contractCode(cardID, presigns)
	if code == "" {
		rep.fail(what, "no pre-sign names card %s by a 28-character code", cardID)
		return
	}
	contractID, err := gw.userSigns(code)
	if err != nil {
		rep.fail(what, "%v", err)
		return
	}
	n, err := newNotification(ctx, gw.keys.platform, gw.keys.apiv3Key, "EV-sdk-"+randomHex(8), "PAPAY.SIGN", "签约成功",
		map[string]any{"mchid": MchID, "appid": AppID, "plan_id": PlanID, "out_contract_code": code,
			"contract_id": contractID, "change_type": "ADD", "operate_time": "2026-01-01T12:00:00+08:00",
			"contract_display_account": HolderName})
	if err != nil {
		rep.fail(what, "%v", err)
		return
	}
	notifyURL := svc.base + NotifyPath
	if _, _, err := sdkParse(ctx, gw.keys, notifyURL, n); err != nil {
		rep.fail(what, "the SDK refused the contract-signed notification: %v", err)
		return
	}
	r, err = svc.notify(ctx, notifyURL, n)
	card, cerr := svc.card(ctx, user, cardID)
	if err != nil || !is2xx(r.Status) || cerr != nil || str(card, "status") != "active" {
		rep.fail(what, "signing: notification %s (err %v), card %s (err %v)", r, err, js(card), cerr)
		return
	}
	if !gw.userTerminates(code) {
		rep.fail(what, "contract %s is not signed at the gateway", code)
		return
	}
	r, err = svc.unbind(ctx, user, cardID)
	if err != nil || r.Status != http.StatusOK || str(r.JSON(), "status") != "inactive" {
		rep.fail(what, "unbind: want 200 inactive, got %s (err %v)", r, err)
		return
	}
	reqs, _, _, _ := gw.snapshot()
	path := fmt.Sprintf("%s%d/out-contract-code/%s", ContractPathPrefix, PlanID, code)
	terminates, badT := requestsTo(reqs, http.MethodPost, path+"/terminate")
	queries, badQ := requestsTo(reqs, http.MethodGet, path)
	refusedAsTerminated := false
	for _, q := range reqs {
		if q.Method == http.MethodPost && q.URI == path+"/terminate" && q.Status == http.StatusBadRequest {
			refusedAsTerminated = true
		}
	}
	if terminates != 1 || !refusedAsTerminated || queries < 1 || badT+badQ != 0 {
		rep.fail(what, "want one verified terminate and a verified query of %s, got %d/%d terminate and %d/%d query (verified/rejected): %s",
			code, terminates, badT, queries, badQ, listRequests(reqs))
		return
	}
	// The signed refusal and the signed query answer were both taken: a
	// refused or unverifiable one leaves a failed unsign in the audit log.
	if trouble, err := svc.channelTrouble(ctx, cardID); err != nil || len(trouble) != 0 {
		rep.fail(what, "the service did not take the signed refusal and query answer: events %v (err %v)", trouble, err)
		return
	}
	rep.ok(fmt.Sprintf("%s: 200 inactive; terminate refused CONTRACT_ALREADY_TERMINATED, then %d verified query (GET %s) answered TERMINATED with contract_display_account %s (non-ASCII, signed), both answers taken by the service",
		what, queries, path, HolderName))
}
