package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core/auth"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/consts"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// signatureType is what WeChat Pay sends as Wechatpay-Signature-Type on
// notifications (the SDK's notify handler picks its cipher suite by it).
const signatureType = "WECHATPAY2-SHA256-RSA2048"

// signHeaders makes the Wechatpay-* headers over body with signer: the
// signature over `TIMESTAMP\nNONCE\nBODY\n`, the serial the signer names.
func signHeaders(ctx context.Context, signer auth.Signer, body []byte) (http.Header, error) {
	nonce, err := utils.GenerateNonce()
	if err != nil {
		return nil, err
	}
	ts := time.Now().Unix()
	res, err := signer.Sign(ctx, fmt.Sprintf("%d\n%s\n%s\n", ts, nonce, string(body)))
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set(consts.WechatPayTimestamp, strconv.FormatInt(ts, 10))
	h.Set(consts.WechatPayNonce, nonce)
	h.Set(consts.WechatPaySerial, res.CertificateSerialNo)
	h.Set(consts.WechatPaySignature, res.Signature)
	return h, nil
}

// notification is a contract callback as WeChat Pay posts it.
type notification struct {
	Header http.Header
	Body   []byte
}

func (n notification) clone() notification {
	return notification{Header: n.Header.Clone(), Body: append([]byte(nil), n.Body...)}
}

// newNotification encrypts resource (AEAD_AES_256_GCM under the APIv3
// key, a 12-character nonce, associated data "papay") into a notification
// envelope with event id and type, signed with signer.
func newNotification(ctx context.Context, signer auth.Signer, apiv3Key, eventID, eventType, summary string, resource map[string]any) (notification, error) {
	block, err := aes.NewCipher([]byte(apiv3Key))
	if err != nil {
		return notification{}, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return notification{}, err
	}
	n, err := utils.GenerateNonce()
	if err != nil {
		return notification{}, err
	}
	nonce := n[:gcm.NonceSize()]
	aad := "papay"
	plain := marshal(resource)
	ct := gcm.Seal(nil, []byte(nonce), plain, []byte(aad))
	cst := time.FixedZone("CST", 8*3600)
	body := marshal(map[string]any{
		"id":            eventID,
		"create_time":   time.Now().In(cst).Format(time.RFC3339),
		"resource_type": "encrypt-resource",
		"event_type":    eventType,
		"summary":       summary,
		"resource": map[string]any{
			"original_type":   "papay",
			"algorithm":       "AEAD_AES_256_GCM",
			"ciphertext":      base64.StdEncoding.EncodeToString(ct),
			"associated_data": aad,
			"nonce":           nonce,
		},
	})
	h, err := signHeaders(ctx, signer, body)
	if err != nil {
		return notification{}, err
	}
	h.Set("Wechatpay-Signature-Type", signatureType)
	h.Set(consts.ContentType, consts.ApplicationJSON)
	return notification{Header: h, Body: body}, nil
}

// sdkParse runs the SDK's notify handler over the notification as it would
// arrive at url: it answers the event id and the decrypted resource.
func sdkParse(ctx context.Context, k *keys, url string, n notification) (string, map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(n.Body))
	if err != nil {
		return "", nil, err
	}
	req.Header = n.Header.Clone()
	content := map[string]any{}
	parsed, err := k.notifications.ParseNotifyRequest(ctx, req, &content)
	if err != nil {
		return "", nil, err
	}
	return parsed.ID, content, nil
}

// strangerSigner signs with a fresh RSA key under the platform serial: a
// forger who knows the serial but not the key.
func strangerSigner() (auth.Signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &signers.SHA256WithRSASigner{MchID: MchID, CertificateSerialNo: PlatformSerial, PrivateKey: key}, nil
}
