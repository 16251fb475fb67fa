// A card's life through a Java client that openapi-generator (the `java`
// generator, its default `okhttp-gson` library) generates from the running
// service's spec: scripts/generated-client.sh generates and builds the
// client, then compiles and runs this against it. The generated models
// check every answer as they read it (required fields, types, and no field
// the spec does not declare), so an answer that strays from the spec fails
// here.
import dev.cardbind.client.ApiClient;
import dev.cardbind.client.ApiException;
import dev.cardbind.client.ApiResponse;
import dev.cardbind.client.api.CardsApi;
import dev.cardbind.client.api.MetaApi;
import dev.cardbind.client.model.BinInfoDto;
import dev.cardbind.client.model.BindCardBody;
import dev.cardbind.client.model.Brand;
import dev.cardbind.client.model.Card;
import dev.cardbind.client.model.CardList;
import dev.cardbind.client.model.CardStatus;
import dev.cardbind.client.model.ConsentBody;
import dev.cardbind.client.model.ErrorEnvelope;
import dev.cardbind.client.model.NextActionType;
import dev.cardbind.client.model.VerifyCardBody;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.UUID;

public class Flow {
  static final SecureRandom RANDOM = new SecureRandom();

  static void check(boolean ok, String what) {
    if (!ok) {
      System.err.println("generated-client (Java): FAILED: " + what);
      System.exit(1);
    }
  }

  /** A Visa number with a random body and its Luhn check digit. */
  static String visa() {
    StringBuilder s = new StringBuilder("4");
    while (s.length() < 15) {
      s.append(RANDOM.nextInt(10));
    }
    int sum = 0;
    for (int i = s.length() - 1, k = 0; i >= 0; i--, k++) {
      int d = s.charAt(i) - '0';
      if (k % 2 == 0) {
        d *= 2;
        if (d > 9) {
          d -= 9;
        }
      }
      sum += d;
    }
    return s.append((10 - sum % 10) % 10).toString();
  }

  static BindCardBody body(String number) {
    return new BindCardBody()
        .cardNumber(number)
        .expiryMonth(12)
        .expiryYear(2030)
        .cvv("123")
        .holderName("Alice Zhang")
        .idNumber("11010519491231002X")
        .phone("+86 138-0013-8000")
        .consent(
            new ConsentBody()
                .textVersion("2026-01")
                .textSha256("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
  }

  public static void main(String[] args) throws Exception {
    String otp = System.getenv().getOrDefault("CARDBIND_GC_OTP", "123456");
    ApiClient client = new ApiClient();
    client.setBasePath(System.getenv("CARDBIND_GC_BASE"));
    client.setBearerToken(System.getenv("CARDBIND_GC_SERVICE_TOKEN"));
    CardsApi cards = new CardsApi(client);
    String user = "java-" + UUID.randomUUID().toString().substring(0, 8);
    String number = visa();
    String key = UUID.randomUUID().toString();

    ApiResponse<Card> bound = cards.bindCardWithHttpInfo(user, key, body(number));
    Card card = bound.getData();
    check(bound.getStatusCode() == 201, "bind answered " + bound.getStatusCode());
    check(card.getStatus() == CardStatus.PENDING_VERIFICATION, "bind: " + card.getStatus());
    check(card.getNextAction().getType() == NextActionType.OTP, "bind: " + card.getNextAction());
    Duration window = Duration.between(card.getCreatedAt(), card.getNextAction().getExpiresAt());
    check(!window.isNegative() && !window.isZero(), "verification window " + window);
    check(card.getLast4().equals(number.substring(12)), "last four " + card.getLast4());
    check(card.getBrand() == Brand.VISA, "brand " + card.getBrand());
    check(!card.toString().contains(number), "the answer holds the card number");

    Card replay = cards.bindCard(user, key, body(number));
    check(replay.getId().equals(card.getId()), "a replay under the same key answered another card");

    Card active = cards.verifyCard(user, card.getId(), new VerifyCardBody().otp(otp));
    check(active.getStatus() == CardStatus.ACTIVE && active.getIsDefault(), "verify: " + active);
    check(active.getNextAction() == null, "an active card with a next action");

    CardList list = cards.listCards(user, null, 10, null);
    check(list.getCards().size() == 1, "list: " + list);
    check(list.getCards().get(0).getId().equals(card.getId()), "list: " + list);

    try {
      cards.bindCard(user, UUID.randomUUID().toString(), body("4111 1111 1111 1112"));
      check(false, "a number with a wrong check digit was bound");
    } catch (ApiException e) {
      ErrorEnvelope err = ErrorEnvelope.fromJson(e.getResponseBody());
      check(e.getCode() == 400, "refusal status " + e.getCode());
      check(err.getError().getCode().equals("invalid_card_number"), "refusal " + err);
      check("card_number".equals(err.getError().getField()), "refusal field " + err);
    }

    cards.unbindCard(user, card.getId(), null);
    Card after = cards.getCard(user, card.getId());
    check(after.getStatus() == CardStatus.INACTIVE && !after.getIsDefault(), "unbind: " + after);

    BinInfoDto bin = new MetaApi(client).lookupBin("622202");
    check(bin.getBrand() == Brand.UNIONPAY, "BIN lookup: " + bin);
    System.out.println("generated-client (Java, openapi-generator): ok (" + System.getenv("CARDBIND_GC_BASE") + ")");
  }
}
