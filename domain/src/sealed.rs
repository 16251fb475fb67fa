//! Sealed card data as the domain sees it: opaque bytes per field.

use std::fmt;

/// Opaque sealed bytes (the envelope format belongs to the key adapters).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(Vec<u8>);

impl SealedBlob {
    pub fn new(bytes: Vec<u8>) -> SealedBlob {
        SealedBlob(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedBlob({} bytes)", self.0.len())
    }
}

/// The card data fields that are kept, each sealed on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SealedField {
    Pan,
    HolderName,
    IdNumber,
    Phone,
}

impl SealedField {
    pub const ALL: [SealedField; 4] = [
        SealedField::Pan,
        SealedField::HolderName,
        SealedField::IdNumber,
        SealedField::Phone,
    ];

    /// The stable name, also the associated data a field is sealed under.
    pub const fn as_str(self) -> &'static str {
        match self {
            SealedField::Pan => "pan",
            SealedField::HolderName => "holder_name",
            SealedField::IdNumber => "id_number",
            SealedField::Phone => "phone",
        }
    }
}

impl fmt::Display for SealedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The card data a binding keeps, each field sealed on its own and bound to
/// its binding and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedCard {
    pub pan: SealedBlob,
    pub holder_name: SealedBlob,
    pub id_number: SealedBlob,
    pub phone: SealedBlob,
}

impl SealedCard {
    pub fn get(&self, field: SealedField) -> &SealedBlob {
        match field {
            SealedField::Pan => &self.pan,
            SealedField::HolderName => &self.holder_name,
            SealedField::IdNumber => &self.id_number,
            SealedField::Phone => &self.phone,
        }
    }
}
