module cardbind.test/sdkinterop/wechat

go 1.26.0

require github.com/wechatpay-apiv3/wechatpay-go v0.2.21
