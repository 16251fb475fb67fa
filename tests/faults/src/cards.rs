//! Test card data made from scratch (Luhn-valid numbers, resident ID numbers
//! with their GB 11643 check character, mainland mobile numbers), and the
//! register of every secret handed to the service, for the log scan.

use std::collections::HashSet;
use std::sync::Mutex;

/// `n` random decimal digits.
pub fn digits(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            // 250 = 25 * 10: drop the top bytes to avoid bias.
            if *b < 250 && out.len() < n {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

fn letters(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if *b < 234 && out.len() < n {
                out.push(char::from(b'a' + b % 26));
            }
        }
    }
    out
}

/// Whether `number` passes the Luhn check.
pub fn luhn_ok(number: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in number.bytes().rev().enumerate() {
        let mut d = u32::from(b.wrapping_sub(b'0'));
        if d > 9 {
            return false;
        }
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !number.is_empty() && sum.is_multiple_of(10)
}

/// A 16-digit Visa number ending with `last4`: the fifth digit from the
/// right is not doubled by Luhn, so one of its ten values completes the sum.
pub fn visa_ending(last4: &str) -> String {
    let middle = digits(10);
    for d in 0..10u8 {
        let n = format!("4{middle}{}{last4}", char::from(b'0' + d));
        if luhn_ok(&n) {
            return n;
        }
    }
    // Unreachable for 4-digit `last4`: ten candidates cover every residue.
    format!("4{middle}0{last4}")
}

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// A valid resident ID number (Beijing Dongcheng, born 1980–1999).
pub fn resident_id() -> String {
    let r = digits(9);
    let n = |i: usize| u32::from(r.as_bytes()[i] - b'0');
    let year = 1980 + n(0) * 2 + n(1) % 2;
    let month = 1 + (n(2) * 10 + n(3)) % 12;
    let day = 1 + (n(4) * 10 + n(5)) % 28;
    let first17 = format!("110101{year:04}{month:02}{day:02}{}", &r[6..9]);
    let sum: u32 = first17
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = match (12 - sum % 11) % 11 {
        10 => 'X',
        c => char::from(b'0' + c as u8),
    };
    format!("{first17}{check}")
}

/// A mainland mobile number (13x, 15x, 18x, 19x).
pub fn phone() -> String {
    let second = ['3', '5', '8', '9'][usize::from(digits(1).as_bytes()[0] - b'0') % 4];
    format!("1{second}{}", digits(9))
}

/// A card and its holder, all valid.
#[derive(Clone, Debug)]
pub struct Card {
    pub number: String,
    pub cvv: String,
    pub holder: String,
    pub id_number: String,
    pub phone: String,
    pub expiry_month: u32,
    pub expiry_year: u32,
}

impl Card {
    /// A new card ending with `last4` (the mock channel's per-card mode).
    pub fn ending(last4: &str) -> Card {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let year = 1970 + now / 31_556_952 + 3;
        // A CVV that cannot pass for a year, an hour or a day: starts 7–9.
        let first = ['7', '8', '9'][usize::from(digits(1).as_bytes()[0] - b'0') % 3];
        let card = Card {
            number: visa_ending(last4),
            cvv: format!("{first}{}", digits(2)),
            holder: format!("Zhang {}", letters(7)),
            id_number: resident_id(),
            phone: phone(),
            expiry_month: 12,
            expiry_year: u32::try_from(year).unwrap_or(2030),
        };
        SECRETS.register(&card);
        card
    }

    pub fn bin(&self) -> &str {
        &self.number[..6]
    }

    pub fn last4(&self) -> &str {
        &self.number[self.number.len() - 4..]
    }

    /// The bind request body (the consent hash is any 64 hex digits).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "card_number": self.number,
            "expiry_month": self.expiry_month,
            "expiry_year": self.expiry_year,
            "cvv": self.cvv,
            "holder_name": self.holder,
            "id_number": self.id_number,
            "phone": self.phone,
            "consent": {
                "text_version": "faults-v1",
                "text_sha256": "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
            }
        })
    }
}

/// Every secret given to the service so far.
pub struct Secrets {
    long: Mutex<HashSet<String>>,
    cvvs: Mutex<HashSet<String>>,
}

pub static SECRETS: std::sync::LazyLock<Secrets> = std::sync::LazyLock::new(|| Secrets {
    long: Mutex::new(HashSet::new()),
    cvvs: Mutex::new(HashSet::new()),
});

impl Secrets {
    fn register(&self, c: &Card) {
        let mut l = self.long.lock().unwrap_or_else(|e| e.into_inner());
        l.insert(c.number.clone());
        l.insert(c.id_number.clone());
        // A resident ID is also searched without its check character.
        l.insert(c.id_number[..17].to_owned());
        l.insert(c.phone.clone());
        drop(l);
        self.cvvs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.cvv.clone());
    }

    pub fn count(&self) -> usize {
        self.long.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self.cvvs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// What in `line` is a registered secret: every run of digits (with
    /// `X`, for resident IDs) of 11 characters or more is searched for a
    /// card number, resident ID or phone; a CVV is searched where it would
    /// stand as a value (after `cvv`, or as a quoted 3-digit string).
    pub fn find_in(&self, line: &str) -> Option<&'static str> {
        let long = self.long.lock().unwrap_or_else(|e| e.into_inner());
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'X' || b[i] == b'x') {
                i += 1;
            }
            let run = line[start..i].to_ascii_uppercase();
            if run.len() >= 11 {
                for len in [11usize, 16, 17, 18] {
                    if run.len() < len {
                        continue;
                    }
                    for s in 0..=run.len() - len {
                        if long.contains(&run[s..s + len]) {
                            return Some(match len {
                                11 => "phone",
                                16 => "card number",
                                _ => "resident id",
                            });
                        }
                    }
                }
            }
        }
        drop(long);
        let cvvs = self.cvvs.lock().unwrap_or_else(|e| e.into_inner());
        let lower = line.to_ascii_lowercase();
        let mut from = 0;
        while let Some(p) = lower[from..].find("cvv") {
            let at = from + p + 3;
            let tail: String = lower[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            let gap = lower[at..].find(|c: char| c.is_ascii_digit()).unwrap_or(99);
            if gap <= 6 && cvvs.contains(&tail) {
                return Some("cvv");
            }
            from = at;
        }
        // A quoted 3-digit string: `"789"`.
        for w in b.windows(5) {
            if w[0] == b'"' && w[4] == b'"' && w[1..4].iter().all(u8::is_ascii_digit) {
                if let Ok(d) = std::str::from_utf8(&w[1..4]) {
                    if cvvs.contains(d) {
                        return Some("cvv");
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_is_valid_and_found_in_logs() {
        for _ in 0..50 {
            let c = Card::ending("0101");
            assert!(luhn_ok(&c.number), "{}", c.number);
            assert_eq!(c.last4(), "0101");
            assert_eq!(c.id_number.len(), 18);
            assert_eq!(c.phone.len(), 11);
            let line = format!("{{\"msg\":\"bind\",\"x\":\"{}\"}}", c.number);
            assert_eq!(SECRETS.find_in(&line), Some("card number"));
            let line = format!("id={} ok", c.id_number.to_ascii_lowercase());
            assert_eq!(SECRETS.find_in(&line), Some("resident id"));
            assert_eq!(
                SECRETS.find_in(&format!("phone +86{}", c.phone)),
                Some("phone")
            );
            assert_eq!(
                SECRETS.find_in(&format!("{{\"cvv\": {}}}", c.cvv)),
                Some("cvv")
            );
        }
        assert!(SECRETS
            .find_in("status 201 latency 12.5 ms at 1733040000123")
            .is_none());
    }
}
