//! SQLite errors as the ports' [`StoreError`].

use cardbind_ports::StoreError;
use rusqlite::ErrorCode;

/// The store could not do it (I/O, a lock held too long, a stopped thread).
pub(crate) fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {what}"))
}

/// A stored value that cannot be read back.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("sqlite: {what}"))
}

/// Maps a driver error. A value of the wrong type (or out of range) in a
/// column, or a damaged file, is `Corrupt`; anything else is `Unavailable`.
/// Messages name columns and SQLite's reason, never a stored value.
pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match e {
        E::InvalidColumnType(i, name, ty) => {
            corrupt(format!("column {i} ({name}) holds a value of type {ty}"))
        }
        E::FromSqlConversionFailure(i, ty, _) => corrupt(format!(
            "column {i} holds a {ty} value that does not convert"
        )),
        E::IntegralValueOutOfRange(i, _) => corrupt(format!("column {i} is out of range")),
        E::Utf8Error(..) => corrupt("a text column is not UTF-8"),
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            corrupt(format!("the database file is damaged ({f})"))
        }
        E::SqliteFailure(f, msg) => unavailable(match msg {
            Some(m) => format!("{f}: {m}"),
            None => f.to_string(),
        }),
        other => unavailable(other),
    }
}
