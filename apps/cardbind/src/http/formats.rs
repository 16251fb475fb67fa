//! The text forms of values the HTTP layer reads and writes beside the
//! bodies: RFC 3339 instants and audit cursors. Below both the DTOs and the
//! parameter rules, which use them.

use cardbind_domain::Timestamp;

/// Parses RFC 3339 text into a timestamp.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    // `time` takes any character between the date and the time; RFC 3339's
    // `date-time` (and JSON Schema's) takes `T` or `t` only.
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return None;
    }
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = dt.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).ok().map(Timestamp::from_unix_millis)
}

/// An audit cursor as text: `{at_ms}.{seq}.{index}.{chain}` (the chain
/// last: it may hold dots).
pub fn encode_cursor(c: &cardbind_ports::audit::AuditCursor) -> String {
    format!("{}.{}.{}.{}", c.at.unix_millis(), c.seq, c.index, c.chain)
}

/// Reads a cursor [`encode_cursor`] made.
pub fn decode_cursor(s: &str) -> Option<cardbind_ports::audit::AuditCursor> {
    let mut parts = s.splitn(4, '.');
    let at = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    let chain = cardbind_ports::audit::ChainId::parse(parts.next()?)?;
    Some(cardbind_ports::audit::AuditCursor {
        at: Timestamp::from_unix_millis(at),
        chain,
        seq,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn only_rfc_3339_date_times_are_read() {
        let at = parse_rfc3339("2027-06-30T00:00:00Z").map(|t| t.unix_millis());
        assert_eq!(at, Some(1_814_313_600_000));
        assert_eq!(
            parse_rfc3339("2027-06-30t08:00:00+08:00").map(|t| t.unix_millis()),
            at
        );
        for bad in [
            "2027-06-30X00:00:00Z",
            "2027-06-30 00:00:00Z",
            "2027-06-30",
            "2027-06-30T00:00:00",
            "",
            "2027-06-3\u{e9}T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
