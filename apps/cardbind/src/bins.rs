//! BIN tables as files: the CSV format of `cardbind bins import` and the
//! built-in table (`data/bins.csv`, compiled in), and what the HTTP edge
//! and the bind flow share about BINs ([`Bins`]).
//!
//! ## The CSV format
//! A header line, then one entry per line (lines starting with `#` are
//! comments; fields may be quoted):
//!
//! ```text
//! low,high,issuer_code,issuer_name_zh,issuer_name_en,card_type,country,currency
//! 622588,,CMB,招商银行,China Merchants Bank,debit,CN,CNY
//! 62284800,62284849,ABC,中国农业银行,Agricultural Bank of China,debit,CN,CNY
//! ```
//!
//! * `low`, `high`: 6 to 19 digits, the same number of both; `high` empty
//!   means `low` alone. Ranges may nest (the innermost wins a lookup) but
//!   must not overlap otherwise or cover the same numbers twice.
//! * `issuer_code`: 2 to 20 of `A-Z 0-9 _` (e.g. WeChat Pay's bank codes).
//! * `issuer_name_zh`, `issuer_name_en`: required, 1 to 100 characters.
//! * `card_type`: `debit`, `credit`, `prepaid` or empty (unknown).
//! * `country`: ISO 3166-1 alpha-2 (`CN`) or empty; `currency`: ISO 4217
//!   alpha-3 (`CNY`) or empty.
//!
//! A file is taken whole or not at all: the first malformed line, or the
//! first pair of conflicting ranges, is reported with its line numbers and
//! nothing is imported. Parsing uses the `csv` crate (quoting, UTF-8,
//! line numbers), reading records as strings; the domain parses the fields.

use std::io::Read;
use std::sync::Arc;

use cardbind_domain::{BinEntry, BinTable, Invalid};
use cardbind_memory::MemoryBinTableStore;
use cardbind_ports::bins::{BinDirectory, BinTableStore};

/// The header every file starts with.
pub const COLUMNS: [&str; 8] = [
    "low",
    "high",
    "issuer_code",
    "issuer_name_zh",
    "issuer_name_en",
    "card_type",
    "country",
    "currency",
];

/// The built-in table's source.
pub const BUILTIN_CSV: &str = include_str!("../data/bins.csv");

/// Why a file is not a table. Line numbers count from 1, the header
/// included.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("lines {first} and {second}: {message}")]
    Conflict {
        first: u64,
        second: u64,
        message: String,
    },
    #[error("{0}")]
    File(String),
}

/// Reads a whole table from CSV (format in the module docs).
pub fn parse_csv(input: impl Read) -> Result<BinTable, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .comment(Some(b'#'))
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header_line = |r: &csv::StringRecord| r.position().map_or(1, |p| p.line());
    let header = reader.headers().map_err(|e| csv_error(e, 1))?.clone();
    let names: Vec<&str> = header.iter().collect();
    if names != COLUMNS {
        return Err(ImportError::Line {
            line: header_line(&header),
            message: format!("the header must be {}", COLUMNS.join(",")),
        });
    }
    let mut entries = Vec::new();
    let mut lines = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(e, 0))?;
        let line = record.position().map_or(0, |p| p.line());
        let f: Vec<&str> = record.iter().collect();
        let [low, high, code, zh, en, card_type, country, currency] = f[..] else {
            return Err(ImportError::Line {
                line,
                message: format!("{} fields, expected {}", f.len(), COLUMNS.len()),
            });
        };
        let entry = BinEntry::parse(low, high, code, zh, en, card_type, country, currency)
            .map_err(|e| ImportError::Line {
                line,
                message: field_message(&e),
            })?;
        entries.push(entry);
        lines.push(line);
    }
    // A table replaces the whole table in force: an empty one would take
    // every issuer away (and with a channel that refuses unknown BINs,
    // every bind).
    if entries.is_empty() {
        return Err(ImportError::File(
            "the file holds no entries (a table replaces the whole table in force)".into(),
        ));
    }
    BinTable::new(entries).map_err(|e| {
        let (a, b) = e.positions();
        ImportError::Conflict {
            first: lines.get(a).copied().unwrap_or(0),
            second: lines.get(b).copied().unwrap_or(0),
            message: match e {
                cardbind_domain::BinTableError::Overlap { .. } => {
                    "the ranges overlap without one containing the other".into()
                }
                cardbind_domain::BinTableError::Duplicate { .. } => {
                    "the ranges cover the same numbers".into()
                }
            },
        }
    })
}

fn field_message(e: &Invalid) -> String {
    match e.field {
        Some(f) => format!("{f}: {}", e.message),
        None => e.message.to_string(),
    }
}

fn csv_error(e: csv::Error, fallback_line: u64) -> ImportError {
    let line = e.position().map_or(fallback_line, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_owned(),
        csv::ErrorKind::Io(io) => return ImportError::File(format!("cannot read the file: {io}")),
        _ => "not a CSV line".to_owned(),
    };
    ImportError::Line { line, message }
}

/// The built-in table: the public facts of `data/bins.csv`.
pub fn builtin() -> Result<BinTable, ImportError> {
    parse_csv(BUILTIN_CSV.as_bytes())
}

/// The BIN table in use (refreshed from the store by the service) and the
/// store imports go to.
pub struct Bins {
    pub directory: Arc<BinDirectory>,
    pub store: Arc<dyn BinTableStore>,
}

impl Bins {
    /// The built-in table and an in-memory store (tests and embedding).
    pub fn builtin_only() -> Bins {
        Bins {
            directory: Arc::new(BinDirectory::new(builtin().unwrap_or_default())),
            store: Arc::new(MemoryBinTableStore::new()),
        }
    }
}

impl std::fmt::Debug for Bins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bins")
            .field("directory", &self.directory)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardbind_domain::CardType;

    const HEADER: &str =
        "low,high,issuer_code,issuer_name_zh,issuer_name_en,card_type,country,currency\n";

    #[test]
    fn the_built_in_table_parses_and_knows_the_test_numbers_and_big_banks() {
        let t = builtin().unwrap();
        assert!(t.len() > 100, "{}", t.len());
        let code = |d: &str| {
            t.lookup(d)
                .map(|e| e.info.issuer.code().as_str().to_owned())
        };
        assert_eq!(code("4111111111111111").as_deref(), Some("TEST"));
        assert_eq!(code("411111"), None, "a test number is not its whole BIN");
        let debit = t.lookup("4000056655665556").unwrap();
        assert_eq!(debit.info.card_type, Some(CardType::Debit));
        let prepaid = t.lookup("5105105105105100").unwrap();
        assert_eq!(prepaid.info.card_type, Some(CardType::Prepaid));
        for (bin, bank, ty) in [
            ("622848", "ABC", CardType::Debit),
            ("622202", "ICBC", CardType::Debit),
            ("621700", "CCB", CardType::Debit),
            ("622588", "CMB", CardType::Debit),
            ("622262", "COMM", CardType::Debit),
            ("621799", "PSBC", CardType::Debit),
            ("622155", "PAB", CardType::Credit),
            ("622630", "HXB", CardType::Debit),
        ] {
            let e = t.lookup(bin).unwrap_or_else(|| panic!("{bin}"));
            assert_eq!(e.info.issuer.code().as_str(), bank, "{bin}");
            assert_eq!(e.info.card_type, Some(ty), "{bin}");
            assert_eq!(e.info.country.map(|c| c.code()).as_deref(), Some("CN"));
        }
        let cmb = t.lookup("6225880000000000").unwrap();
        assert_eq!(cmb.info.issuer.name_zh(), "招商银行");
        assert_eq!(cmb.info.currency.map(|c| c.code()), Some("CNY"));
    }

    #[test]
    fn a_file_with_comments_quotes_and_nesting_parses() {
        let csv = format!(
            "# comment\n{HEADER}622588,,CMB,招商银行,China Merchants Bank,debit,CN,CNY\n\
             # another\n\"62258800\",\"62258849\",CMB,招商银行,\"China Merchants Bank, card X\",credit,CN,\n"
        );
        let t = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(t.len(), 2);
        let inner = t.lookup("6225880012345678").unwrap();
        assert_eq!(inner.info.issuer.name_en(), "China Merchants Bank, card X");
        assert_eq!(inner.info.card_type, Some(CardType::Credit));
        assert_eq!(inner.info.currency, None);
    }

    #[test]
    fn malformed_lines_and_conflicts_are_refused_with_line_numbers() {
        let bad = [
            (format!("{HEADER}622588,,CMB,招商银行,CMB,debit,CN,CNY\n62258,,X1,a,b,,,\n"), "line 3: low:"),
            (format!("{HEADER}622588,,CMB,招商银行,CMB,debit,CHN,CNY\n"), "line 2: country:"),
            (format!("{HEADER}622588,,CMB,招商银行,CMB,savings,CN,CNY\n"), "line 2: card_type:"),
            (format!("{HEADER}622588,,CMB,招商银行,CMB,debit,CN\n"), "line 2: 7 fields, expected 8"),
            (format!("{HEADER}622588,,cmb,招商银行,CMB,debit,CN,CNY\n"), "line 2: issuer_code:"),
            ("low,high,bank\n".to_owned(), "line 1: the header must be"),
            (
                format!("{HEADER}622700,622709,CCB,建设银行,CCB,debit,CN,CNY\n# gap\n622848,,ABC,农行,ABC,debit,CN,CNY\n622705,622712,CCB,建设银行,CCB,debit,CN,CNY\n"),
                "lines 2 and 5: the ranges overlap",
            ),
            (
                format!("{HEADER}622848,,ABC,农行,ABC,debit,CN,CNY\n62284800,62284899,ABC,农行,ABC,debit,CN,CNY\n"),
                "lines 2 and 3: the ranges cover the same numbers",
            ),
        ];
        for (csv, want) in bad {
            let e = parse_csv(csv.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        }
        for empty in [
            HEADER.to_owned(),
            format!("# a comment\n{HEADER}# nothing\n"),
        ] {
            let e = parse_csv(empty.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("the file holds no entries"), "{e:?}");
        }
        let e = parse_csv(&b"low,high\n\xff\xfe,\n"[..]).unwrap_err();
        assert!(matches!(e, ImportError::Line { .. }), "{e:?}");
    }
}
