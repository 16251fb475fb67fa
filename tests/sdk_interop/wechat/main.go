// Command wechat is an interoperability harness between cardbind's WeChat Pay
// API v3 channel and the official WeChat Pay Go SDK
// (github.com/wechatpay-apiv3/wechatpay-go).
//
// It plays WeChat Pay's gateway for a running cardbind service (every
// request the service sends is verified with the SDK's verifier, every
// answer is signed with the SDK's signer and self-checked with the SDK's
// response validator) and drives a papay contract binding through the
// service's HTTP API, posting contract notifications that the SDK's own
// notify handler accepts first. Each check prints one line:
//
//	wechat-sdk: ok <what>
//	wechat-sdk: FAIL <what>: <detail>
//
// and the exit status is 0 only when every check passed.
//
// Usage:
//
//	wechat --listen 127.0.0.1:PORT --service http://127.0.0.1:SVCPORT \
//	    --token-file FILE --keys DIR
//
// DIR holds wechat_merchant_public.pem (SPKI), wechat_platform_private.pem
// (PKCS#8) and wechat_apiv3.key (32 characters).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/validators"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/core/notify"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// The merchant set-up. scripts/sdk-interop.sh writes the service's
// configuration from them (--print-merchant), so they live only here.
const (
	MchID          = "1900000109"
	AppID          = "wxd678efh567hg6787"
	MerchantSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	PlatformSerial = "PUB_KEY_ID_0119000001092026120200000001"
	PlanID         = 12535
)

// Routes and files.
const (
	PresignPath        = "/v3/papay/scheduled-deduct-sign/contracts/pre-entrust-sign/h5"
	ContractPathPrefix = "/v3/papay/sign/contracts/plan-id/"
	NotifyPath         = "/v1/channels/wechat/notify"

	MerchantPublicFile  = "wechat_merchant_public.pem"
	PlatformPrivateFile = "wechat_platform_private.pem"
	APIv3KeyFile        = "wechat_apiv3.key"

	// The card the flow binds and the holder name (non-ASCII on purpose:
	// it travels in the signed pre-sign request body).
	VisaCard       = "4111111111111111"
	MastercardCard = "5555555555554444"
	HolderName     = "张三"

	readyWait     = 60 * time.Second
	totalDeadline = 120 * time.Second
)

// report prints the check lines and remembers whether one failed.
type report struct {
	mu     sync.Mutex
	passed int
	failed int
}

func (r *report) ok(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passed++
	fmt.Printf("wechat-sdk: ok %s\n", what)
}

func (r *report) fail(what string, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
	detail := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	fmt.Printf("wechat-sdk: FAIL %s: %s\n", what, detail)
}

// check prints ok when err is nil, FAIL otherwise; it answers err == nil.
func (r *report) check(what string, err error) bool {
	if err != nil {
		r.fail(what, "%v", err)
		return false
	}
	r.ok(what)
	return true
}

// summary prints the closing line and answers whether every check passed.
func (r *report) summary() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Printf("wechat-sdk: done: %d checks, %d failed\n", r.passed+r.failed, r.failed)
	return r.failed == 0
}

// keys is what --keys holds, loaded with the SDK's PEM helpers.
type keys struct {
	// Verifies the service's requests (SDK verifier over the merchant key).
	merchant *verifiers.SHA256WithRSAPubkeyVerifier
	// Signs answers and notifications (SDK signer over the platform key).
	platform *signers.SHA256WithRSASigner
	// The SDK's response validator for the platform key (self-check).
	responses *validators.WechatPayResponseValidator
	// The SDK's notify handler (platform key, APIv3 key) for self-checks.
	notifications *notify.Handler
	apiv3Key      string
}

func loadKeys(dir string) (*keys, error) {
	merchantPublic, err := utils.LoadPublicKeyWithPath(filepath.Join(dir, MerchantPublicFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", MerchantPublicFile, err)
	}
	platformPrivate, err := utils.LoadPrivateKeyWithPath(filepath.Join(dir, PlatformPrivateFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PlatformPrivateFile, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, APIv3KeyFile))
	if err != nil {
		return nil, err
	}
	apiv3Key := strings.TrimRight(string(raw), "\r\n")
	if len(apiv3Key) != 32 {
		return nil, fmt.Errorf("%s: the APIv3 key must be 32 bytes, it has %d", APIv3KeyFile, len(apiv3Key))
	}
	platformVerifier := verifiers.NewSHA256WithRSAPubkeyVerifier(PlatformSerial, platformPrivate.PublicKey)
	handler, err := notify.NewRSANotifyHandler(apiv3Key, platformVerifier)
	if err != nil {
		return nil, fmt.Errorf("notify handler: %w", err)
	}
	return &keys{
		merchant: verifiers.NewSHA256WithRSAPubkeyVerifier(MerchantSerial, *merchantPublic),
		platform: &signers.SHA256WithRSASigner{
			MchID:               MchID,
			CertificateSerialNo: PlatformSerial,
			PrivateKey:          platformPrivate,
		},
		responses:     validators.NewWechatPayResponseValidator(platformVerifier),
		notifications: handler,
		apiv3Key:      apiv3Key,
	}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address the fake WeChat Pay gateway listens on")
	service := flag.String("service", "", "base URL of the running cardbind service")
	tokenFile := flag.String("token-file", "", "file holding a bearer token (role service) for the service")
	auditorFile := flag.String("auditor-token-file", "", "file holding a bearer token (role auditor), to read the audit log")
	keyDir := flag.String("keys", "", "directory with the merchant public key, platform private key and APIv3 key")
	printMerchant := flag.Bool("print-merchant", false, "print the merchant set-up as shell assignments and exit")
	flag.Parse()

	if *printMerchant {
		fmt.Printf("WX_MCHID=%s\nWX_APPID=%s\nWX_SERIAL=%s\nWX_PLATFORM_SERIAL=%s\nWX_PLAN=%d\n",
			MchID, AppID, MerchantSerial, PlatformSerial, PlanID)
		return
	}

	rep := &report{}
	if *service == "" || *tokenFile == "" || *auditorFile == "" || *keyDir == "" {
		rep.fail("arguments", "--service, --token-file, --auditor-token-file and --keys are required")
		os.Exit(2)
	}
	// The whole run, gateway start to last check, has this long.
	time.AfterFunc(totalDeadline, func() {
		rep.fail("deadline", "the run took longer than %s", totalDeadline)
		os.Exit(1)
	})
	ctx, cancel := context.WithTimeout(context.Background(), totalDeadline)
	defer cancel()

	k, err := loadKeys(*keyDir)
	if !rep.check("keys loaded with the SDK's PEM helpers", err) {
		os.Exit(1)
	}
	rawToken, err := os.ReadFile(*tokenFile)
	if err != nil {
		rep.fail("token file", "%v", err)
		os.Exit(1)
	}
	token := strings.TrimSpace(string(rawToken))
	rawAuditor, err := os.ReadFile(*auditorFile)
	if err != nil {
		rep.fail("auditor token file", "%v", err)
		os.Exit(1)
	}

	gw := newGateway(k)
	addr, stop, err := gw.start(*listen)
	if !rep.check("gateway listening on "+addr, err) {
		os.Exit(1)
	}
	defer stop()

	svc := newServiceClient(strings.TrimRight(*service, "/"), token, strings.TrimSpace(string(rawAuditor)))
	if !rep.check("service ready (GET /readyz)", svc.waitReady(ctx, readyWait)) {
		os.Exit(1)
	}

	runFlow(ctx, rep, gw, svc, k)

	if !rep.summary() {
		os.Exit(1)
	}
}
