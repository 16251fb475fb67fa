// A card's life through a TypeScript client that openapi-generator (its
// `typescript-fetch` generator) generates from the running service's spec:
// scripts/generated-client.sh generates it next to this file, compiles both
// with tsc (strict) and runs the result with Node. Every answer is read
// through the generated models (dates parsed, enums typed).
import { randomInt } from "node:crypto";
import {
  Brand,
  CardStatus,
  CardsApi,
  Configuration,
  MetaApi,
  NextActionType,
  ResponseError,
  type BindCardBody,
} from "./client";

function check(ok: boolean, what: string): void {
  if (!ok) {
    console.error(`generated-client (TypeScript): FAILED: ${what}`);
    process.exit(1);
  }
}

/** A Visa number with a random body and its Luhn check digit. */
function visa(): string {
  const digits = [4];
  while (digits.length < 15) digits.push(randomInt(10));
  let sum = 0;
  digits
    .slice()
    .reverse()
    .forEach((d, k) => {
      const v = k % 2 === 0 ? d * 2 : d;
      sum += v > 9 ? v - 9 : v;
    });
  digits.push((10 - (sum % 10)) % 10);
  return digits.join("");
}

function body(cardNumber: string): BindCardBody {
  return {
    cardNumber,
    expiryMonth: 12,
    expiryYear: 2030,
    cvv: "123",
    holderName: "Alice Zhang",
    idNumber: "11010519491231002X",
    phone: "0086 138 0013 8000",
    consent: {
      textVersion: "2026-01",
      textSha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    },
  };
}

async function main(): Promise<void> {
  const basePath = process.env.CARDBIND_GC_BASE ?? "";
  const config = new Configuration({
    basePath,
    accessToken: async () => process.env.CARDBIND_GC_SERVICE_TOKEN ?? "",
  });
  const cards = new CardsApi(config);
  const otp = process.env.CARDBIND_GC_OTP ?? "123456";
  const userId = `ts-${visa().slice(4, 12)}`;
  const number = visa();
  const idempotencyKey = `ts-key-${number.slice(4)}`;

  const card = await cards.bindCard({ userId, idempotencyKey, bindCardBody: body(number) });
  check(card.status === CardStatus.PendingVerification, `bind: ${JSON.stringify(card)}`);
  check(card.nextAction?.type === NextActionType.Otp, `bind: ${JSON.stringify(card)}`);
  const expires = card.nextAction?.expiresAt;
  check(
    expires instanceof Date && expires.getTime() > card.createdAt.getTime(),
    `verification window: ${JSON.stringify(card.nextAction)}`,
  );
  check(card.last4 === number.slice(12) && card.brand === Brand.Visa, `card: ${JSON.stringify(card)}`);
  check(!JSON.stringify(card).includes(number), "the answer holds the card number");

  const replay = await cards.bindCard({ userId, idempotencyKey, bindCardBody: body(number) });
  check(replay.id === card.id, "a replay under the same key answered another card");

  const active = await cards.verifyCard({ userId, cardId: card.id, verifyCardBody: { otp } });
  check(
    active.status === CardStatus.Active && active.isDefault && active.nextAction === undefined,
    `verify: ${JSON.stringify(active)}`,
  );

  const list = await cards.listCards({ userId, limit: 10 });
  check(list.cards.length === 1 && list.cards[0]?.id === card.id, `list: ${JSON.stringify(list)}`);

  try {
    await cards.bindCard({
      userId,
      idempotencyKey: `${idempotencyKey}-bad`,
      bindCardBody: body("4111 1111 1111 1112"),
    });
    check(false, "a number with a wrong check digit was bound");
  } catch (e) {
    check(e instanceof ResponseError, `refusal: ${String(e)}`);
    const r = (e as ResponseError).response;
    const err = await r.json();
    check(
      r.status === 400 && err.error.code === "invalid_card_number" && err.error.field === "card_number",
      `refusal ${r.status}: ${JSON.stringify(err)}`,
    );
  }

  await cards.unbindCard({ userId, cardId: card.id });
  const after = await cards.getCard({ userId, cardId: card.id });
  check(after.status === CardStatus.Inactive && !after.isDefault, `unbind: ${JSON.stringify(after)}`);

  const bin = await new MetaApi(config).lookupBin({ bin: "622202" });
  check(bin.brand === Brand.Unionpay, `BIN lookup: ${JSON.stringify(bin)}`);
  console.log(`generated-client (TypeScript, openapi-generator): ok (${basePath})`);
}

main().catch((e) => {
  console.error(`generated-client (TypeScript): FAILED: ${e instanceof Error ? e.stack : String(e)}`);
  process.exit(1);
});
